"""The inbound HL7 v2 door: one message in, its ACK out, and nothing said before it is true.

For each message: parse; find the sender's settings; map; then, in ONE atomic unit, check the
idempotency key (MSH-3, MSH-4, MSH-10), check the message is not older than what was already
applied to its appointment, apply it through the write pipeline, and keep the message with the
ACK it gets. The ACK leaves only after that unit committed, so an AA always means "stored", a
replay of the same message finds the stored ACK and changes nothing, and a crash between commit
and ACK just means the sender resends and gets that stored ACK.

Answers (HL7 v2 ACK rules; ERR-3 from table 0357):

- **AR** for what is not a message we take: unreadable (100-102 from the parser), not SIU or an
  event not supported (200/201), an event this sender may not send (201), MSH-10 missing (101),
  a sender not configured when unknown senders are refused (103: MSH-3/MSH-4 are values of the
  user tables 0361/0362, and this one is not in ours).
- **AE** for a message we understood but could not apply: the booking guard refused it (a
  conflict, a rule; 207 with the reason), it names an appointment we do not have (204 unknown
  key), or its content is invalid FHIR once mapped (207 with the element).
- **AA** when applied, and also for a **stale** message: one whose MSH-7 (then MSH-13) is older
  than the last message applied to the same appointment from the same sender. It is recorded
  as stale and not applied; AA because the sender can do nothing about it and resending would
  not help (an AE would put it in the sender's error queue for a human, for nothing).
- Enhanced mode (MSH-15/16 present): the accept ACK CA/CE/CR is sent after the commit, subject
  to MSH-15 (AL always, NE never, ER only on error, SU only on success: nothing is written for
  the others). No application ACK is initiated: this door answers on the connection it is given
  and opens none back (outbound SIU to subscribed Endpoints is how systems hear of changes).

Refused messages are kept too (in a unit of their own, after the refused one rolled back), so a
replay gets the same answer; they are the inbound dead-letter list (``hl7v2/inbox.py``). A store
that is unavailable gets AE 207 and is not recorded, so the sender's retry is applied once the
store is back. Logs name the sender, control id and outcome, never message content.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from fhir_sched.context import RequestContext
from fhir_sched.errors import FhirError
from fhir_sched.hl7v2 import er7, siu
from fhir_sched.hl7v2.ack import AckCode, build_ack, recover_header
from fhir_sched.hl7v2.apply import Apply
from fhir_sched.hl7v2.er7 import Er7Error
from fhir_sched.hl7v2.header import Header
from fhir_sched.hl7v2.send import ack_code
from fhir_sched.hl7v2.senders import Senders
from fhir_sched.ids import unique_id
from fhir_sched.metrics import HL7V2_MESSAGES, ack_label, hl7v2_event_label
from fhir_sched.service.audit import entry as audit_entry
from fhir_sched.service.services import Services
from fhir_sched.storage.base import InboundEntry, Unit
from fhir_sched.storage.errors import StoreUnavailable
from fhir_sched.timeutil import format_instant, now_instant

log = logging.getLogger("fhir_sched.hl7v2")

_ACCEPT = {AckCode.AA: AckCode.CA, AckCode.AE: AckCode.CE, AckCode.AR: AckCode.CR}
_OK = frozenset({AckCode.AA, AckCode.CA})


@dataclass(frozen=True, slots=True)
class Answer:
    code: AckCode
    outcome: str  # applied | stale | rejected
    text: str = ""
    error_code: int | None = None
    resources: tuple[str, ...] = ()


def subject_of(header: Header) -> str:
    """The request-context subject (and change-log origin) of a sender's writes."""
    return f"hl7v2/{header.sending_application}/{header.sending_facility}"


def key_of(header: Header) -> str:
    return f"{header.sending_application}/{header.sending_facility}/{header.control_id}"


def digest_of(frame: bytes) -> str:
    """The message's content, MSH-7 aside (an engine that resends may stamp it anew), so a
    resend matches and a different message under a reused control id does not."""
    segments = [s for s in re.split(rb"\r\n|\r|\n", frame) if s.strip()]
    if segments and segments[0].startswith(b"MSH") and len(segments[0]) > 3:
        fields = segments[0].split(segments[0][3:4])
        if len(fields) > 6:
            fields[6] = b""
        segments[0] = segments[0][3:4].join(fields)
    return hashlib.sha256(b"\r".join(segments)).hexdigest()


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
SENDER_SYSTEM = "urn:fhir-sched:hl7v2:sender"
MESSAGE_SYSTEM = "urn:fhir-sched:hl7v2:message"
_ACTIVITY = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def provenance(header: Header, key: str, written: list[str], recorded: str) -> dict[str, object]:
    """Who said so: the sending system (MSH-3/MSH-4) as the author of every resource the
    message wrote, and the message itself (by its idempotency key) as the source entity. Built
    from our own values only, so it is written without a model round trip."""
    sender = _CONTROL.sub("", f"{header.sending_application}/{header.sending_facility}")
    return {
        "resourceType": "Provenance",
        "target": [{"reference": ref} for ref in written],
        "recorded": recorded,
        "activity": {"coding": [{"system": _ACTIVITY, "code": "UPDATE"}]},
        "agent": [{
            "type": {"coding": [{"system": _AGENT_TYPE, "code": "author"}]},
            "who": {"identifier": {"system": SENDER_SYSTEM, "value": sender},
                    "display": _CONTROL.sub("", header.sending_application) or sender},
        }],
        "entity": [{"role": "source", "what": {
            "identifier": {"system": MESSAGE_SYSTEM, "value": _CONTROL.sub("", key)},
            "display": _CONTROL.sub("", f"{header.message_code}^{header.trigger_event} "
                                         f"{header.control_id}")}}],
    }


def _hl7_now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def _stamp(header: Header, zone: tzinfo) -> str | None:
    """An order stamp for MSH-7 (+ MSH-13): strings that sort in message order."""
    when = siu.read_dtm(header.timestamp, zone) if header.timestamp else None
    if when is None:
        return None
    seq = header.sequence_number.strip()
    return format_instant(when.astimezone(UTC)) + "#" + (seq.zfill(20) if seq.isdigit() else "")


class Bridge:
    def __init__(self, services: Services, senders: Senders) -> None:
        self.services = services
        self.senders = senders

    async def handle(self, frame: bytes, peer: str) -> bytes:
        """One message (no MLLP framing) in, its ACK bytes out. Never raises."""
        try:
            ack = await self._handle(frame, peer, replay=False)
        except Exception as exc:  # a bug: answer, log the type only (no PHI), keep serving
            log.error("hl7v2 message from %s failed: %s", peer, type(exc).__name__)
            header = recover_header(frame)
            ack = self._ack(header, Answer(AckCode.AE, "rejected", "application internal error",
                                           207))
        _count(frame, ack, peer)
        return ack

    def frame_refused(self, head: bytes, size: int, peer: str) -> None:
        """Audit a frame the listener answered AR without us (over the size limit): by its
        sender as far as the kept head says, with the size and no content. Queued, not in a
        unit: nothing was written, and the ACK must not wait on the store."""
        try:
            header = recover_header(head)
        except Exception:
            header = recover_header(b"")
        who = subject_of(header) if header.sending_application else f"hl7v2/peer/{peer}"
        key = key_of(header) if header.control_id.strip() else f"unkeyed/{unique_id()}"
        self.services.audit.later(audit_entry(
            RequestContext(subject=who, door="mllp", request_id=key[:200]),
            "hl7v2/too-large", "4", action="C", detail=f"AR frame of {size} bytes"))

    async def replay(self, raw: bytes, peer: str = "replay") -> bytes:
        """Run a kept message again, replacing its earlier refusal (a dead letter's retry)."""
        return await self._handle(raw, peer, replay=True)

    # -- the steps --------------------------------------------------------------------------
    async def _handle(self, frame: bytes, peer: str, *, replay: bool) -> bytes:
        received = now_instant()
        try:
            message = er7.parse(frame)
        except Er7Error as exc:
            header = exc.header or recover_header(frame)
            return await self._refuse(frame, peer, header, received, replay,
                                      Answer(AckCode.AR, "rejected", str(exc), exc.code))
        h = message.header
        if not h.control_id.strip():
            return await self._refuse(frame, peer, h, received, replay, Answer(
                AckCode.AR, "rejected", "MSH-10 (message control id) is empty", 101))
        sender = self.senders.find(h.sending_application, h.sending_facility)
        if sender is None:
            return await self._refuse(frame, peer, h, received, replay, Answer(
                AckCode.AR, "rejected", f"sender {h.sending_application}/{h.sending_facility} "
                "is not configured here", 103))
        try:
            change = siu.map_message(message, sender)
        except Er7Error as exc:
            return await self._refuse(frame, peer, h, received, replay,
                                      Answer(AckCode.AR, "rejected", str(exc), exc.code))
        ctx = RequestContext(subject=subject_of(h), door="mllp",
                             of_record=sender.calendar_of_record)
        key = key_of(h)
        stamp = _stamp(h, sender.zone)
        marks = [f"hl7v2-order/{h.sending_application}/{h.sending_facility}/"
                 f"{k.get('system', '')}|{k.get('value', '')}" for k in change.keys]
        resources = self.services.resources

        digest = digest_of(frame)

        async def run(unit: Unit) -> bytes:
            kept = await unit.inbound_get(key)
            if kept is not None and kept.digest and kept.digest != digest:
                # Not a resend: another message under a control id this sender already used.
                return self._ack(h, Answer(
                    AckCode.AE, "rejected", f"MSH-10 {h.control_id!r} was already used by "
                    "another message from this sender; not applied", 205))
            if kept is not None and not (replay and kept.outcome == "rejected"):
                return kept.ack
            if stamp is not None and change.kind in ("appointment", "participants"):
                for mark in marks:
                    last = await unit.mark_get(mark)
                    if last is not None and stamp < last:
                        answer = Answer(AckCode.AA, "stale", "older than the last message "
                                        "applied to this appointment; not applied")
                        return await self._keep(unit, frame, peer, h, received, key, answer)
            written = await Apply(resources, unit, ctx, change).run()
            if written:
                prov = provenance(h, key, written, received)
                await resources.put_in_unit(unit, ctx, "Provenance", unique_id(), prov,
                                            check_refs=False)
            if stamp is not None:
                for mark in marks:
                    await unit.mark_put(mark, stamp)
            answer = Answer(AckCode.AA, "applied", resources=tuple(written))
            return await self._keep(unit, frame, peer, h, received, key, answer)

        try:
            ack = await resources.atomic(run)
        except FhirError as exc:
            code = 204 if exc.status == 404 else 207
            return await self._refuse(frame, peer, h, received, replay,
                                      Answer(AckCode.AE, "rejected", exc.diagnostics, code), key)
        except StoreUnavailable:
            log.warning("hl7v2 %s from %s not applied: store unavailable", h.control_id, peer)
            # AR, not AE: the failure has nothing to do with the message, and AR is the code
            # senders resend on (v2 table 0008: rejected for reasons unrelated to content).
            return self._ack(h, Answer(AckCode.AR, "rejected",
                                       "store temporarily unavailable; resend", 207))
        log.info("hl7v2 %s %s^%s from %s/%s applied", h.control_id, h.message_code,
                 h.trigger_event, h.sending_application, h.sending_facility)
        return self._wire(h, ack)

    def _ack(self, header: Header, answer: Answer) -> bytes:
        code = _ACCEPT.get(answer.code, answer.code) if header.enhanced_mode else answer.code
        return build_ack(header, code, control_id=unique_id()[:20], timestamp=_hl7_now(),
                         text=answer.text, error_code=answer.error_code)

    def _wire(self, header: Header, ack: bytes) -> bytes:
        """What goes on the wire for a stored ACK: nothing where MSH-15 says not to send it."""
        if not header.enhanced_mode:
            return ack
        mode = header.accept_ack_type.strip().upper() or "AL"
        ok = ack_code(ack) in _OK
        if mode == "NE" or (mode == "ER" and ok) or (mode == "SU" and not ok):
            return b""
        return ack

    async def _keep(self, unit: Unit, frame: bytes, peer: str, header: Header, received: str,
                    key: str, answer: Answer) -> bytes:
        ack = self._ack(header, answer)
        await unit.inbound_put(InboundEntry(
            key=key, received=received,
            sender=f"{header.sending_application}/{header.sending_facility}",
            control_id=header.control_id,
            event=f"{header.message_code}^{header.trigger_event}".strip("^"), peer=peer,
            outcome=answer.outcome, ack_code=str(answer.code), ack=ack, error=answer.text,
            resources=answer.resources, raw=frame, digest=digest_of(frame)))
        # the audit trail, in the same unit: the message as an import, by its sender
        event = f"{header.message_code}^{header.trigger_event}".strip("^") or "unreadable"
        written = list(answer.resources)
        await unit.audit_add([audit_entry(
            RequestContext(subject=subject_of(header), door="mllp", request_id=key[:200]),
            f"hl7v2/{event}", "0" if str(answer.code) in ("AA", "CA") else "4", action="C",
            entity=next((r for r in written if r.startswith("Appointment/")), None),
            patient=next((r for r in written if r.startswith("Patient/")), None),
            detail=f"{answer.code} {answer.outcome}")])
        return ack

    async def _refuse(self, frame: bytes, peer: str, header: Header, received: str,
                      replay: bool, answer: Answer, key: str | None = None) -> bytes:
        """Keep a refused message (its own unit) and answer it; a kept answer wins."""
        if key is None:
            key = key_of(header) if header.control_id.strip() else f"unkeyed/{unique_id()}"
        log.info("hl7v2 %s from %s refused: %s %s", header.control_id or "-", peer,
                 answer.code, answer.error_code)

        async def run(unit: Unit) -> bytes:
            kept = await unit.inbound_get(key)
            if kept is not None and not (replay and kept.outcome == "rejected"):
                return kept.ack
            return await self._keep(unit, frame, peer, header, received, key, answer)

        try:
            ack = await self.services.store.atomic(run)
        except StoreUnavailable:
            ack = self._ack(header, answer)
        return self._wire(header, ack)



def _count(frame: bytes, ack: bytes, peer: str) -> None:
    """One message answered, in HL7V2_MESSAGES: its event and the ACK code sent back, both
    from a closed set (anything else is "other"), so a sender cannot grow the label space."""
    try:
        event = recover_header(frame).trigger_event
    except Exception:
        event = ""
    code = ""
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA") and len(line) > 3:
            fields = line.split(line[3:4])
            code = fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
            break
    HL7V2_MESSAGES.labels("http" if peer.startswith("http") else "mllp",
                          hl7v2_event_label(event), ack_label(code)).inc()
