"""HealthcareService: required daysOfWeek binding; visit types are read by scheduling."""

from ._days import DAYS

BINDINGS = {"availableTime.daysOfWeek": DAYS}
