"""The MSH values every part of the door needs: the parser produces them, the ACK builder,
idempotency and ordering read them. Plain strings as sent (components already split), so a
reply can echo them verbatim."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Header:
    field_separator: str  # MSH-1, usually "|"
    encoding_characters: str  # MSH-2, usually "^~\\&" (a fifth, "#", from v2.7)
    sending_application: str  # MSH-3 as sent (all components, joined by the component separator)
    sending_facility: str  # MSH-4 as sent
    receiving_application: str  # MSH-5 as sent
    receiving_facility: str  # MSH-6 as sent
    timestamp: str  # MSH-7 as sent (DTM/TS), "" when absent
    message_code: str  # MSH-9.1, e.g. "SIU"
    trigger_event: str  # MSH-9.2, e.g. "S12"
    message_structure: str  # MSH-9.3, "" when absent (common before v2.5)
    control_id: str  # MSH-10, verbatim: MSA-2 echoes it
    processing_id: str  # MSH-11.1, "P", "D" or "T"
    version: str  # MSH-12.1, e.g. "2.5.1"
    sequence_number: str = ""  # MSH-13
    accept_ack_type: str = ""  # MSH-15: AL, NE, ER, SU ("" = original acknowledgment mode)
    application_ack_type: str = ""  # MSH-16
    character_set: str = ""  # MSH-18 first repetition, e.g. "UNICODE UTF-8", "8859/1"

    @property
    def sender(self) -> tuple[str, str]:
        """Who sent it, for idempotency and per-sender settings: (MSH-3, MSH-4)."""
        return self.sending_application, self.sending_facility

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 present: enhanced acknowledgment mode (HL7 v2 2.9.2)."""
        return bool(self.accept_ack_type or self.application_ack_type)
