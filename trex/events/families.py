"""Imports every event family so that all types are registered."""
from trex.events import evaluation, insights, notes, plans, search, trials  # noqa: F401
