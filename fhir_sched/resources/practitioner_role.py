"""PractitionerRole: required daysOfWeek binding in availableTime."""

from ._days import DAYS

BINDINGS = {"availableTime.daysOfWeek": DAYS}
