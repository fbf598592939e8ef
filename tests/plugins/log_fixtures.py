import pytest

from trex.events.log import EventLog


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def log(home):
    return EventLog(home)
