"""Communication: the record of one delivered (or failed) reminder or offer, or one staff
made themselves (a phone call); required status and priority."""

BINDINGS = {
    "status": ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
               "entered-in-error", "unknown"),
    "priority": ("routine", "urgent", "asap", "stat"),
}
