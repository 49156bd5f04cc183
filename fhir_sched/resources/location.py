"""Location: required status, mode and hoursOfOperation.daysOfWeek bindings."""

from ._days import DAYS

BINDINGS = {
    "status": ("active", "suspended", "inactive"),
    "mode": ("instance", "kind"),
    "hoursOfOperation.daysOfWeek": DAYS,
}
