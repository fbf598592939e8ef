"""Imports every event family so that all types are registered."""
from trex.events import data, evaluation, insights, notes, plans, search, trials  # noqa: F401
