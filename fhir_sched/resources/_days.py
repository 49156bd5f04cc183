"""Days of week (required binding of availableTime.daysOfWeek)."""

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
