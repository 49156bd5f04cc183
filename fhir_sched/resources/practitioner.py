"""Practitioner: required gender binding."""

BINDINGS = {"gender": ("male", "female", "other", "unknown")}
