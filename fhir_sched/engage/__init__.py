"""The server acting on schedule changes: reminders, waitlist offers, subscriptions,
calendar feeds."""
