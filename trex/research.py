"""Moved to :mod:`trex.propose.researcher`; this name stays for the callers not yet moved."""
from trex.propose.researcher import *  # noqa: F401,F403
from trex.propose.researcher import __all__  # noqa: F401
