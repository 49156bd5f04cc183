"""CommunicationRequest: a reminder the server owes a patient (``engage/reminders.py`` makes
them from the visit type's rules) or one staff asked for; required status and priority."""

BINDINGS = {
    "status": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
               "unknown"),
    "priority": ("routine", "urgent", "asap", "stat"),
}
