"""The service layer: every door (REST, operations, HL7 v2) writes and reads through here."""

from .resources import ResourceService, Saved, WriteEvent, WriteHook

__all__ = ["ResourceService", "Saved", "WriteEvent", "WriteHook"]
