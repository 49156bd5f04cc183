"""The delivery worker: sends every active CommunicationRequest whose time has come, by its
channel, exactly once, and records each as a Communication.

Exactly once, with several workers and crashes, in three steps:

1. **Claim** (one unit per batch): a due request is taken with a unique claim that expires
   (a lease), and its attempt is marked "sending" in the store. Only the claim's holder sends.
2. **Send**, outside any unit, with the request's id as the message's id (Message-ID,
   ``webhook-id``).
3. **Record** (one unit per group of finished sends): the Communication (its id made from the
   request's id and version, so two records of one send are one resource), the request marked
   completed, the claim and the mark dropped. A failure worth retrying leaves the request
   active under a claim that expires at the next attempt's time (backoff doubling, up to
   ``max_attempts``); after that, or for a failure retrying cannot mend, the request is put
   on hold for staff with a Communication saying why (``not-done``).

A crash between 2 and 3 leaves the claim to expire with the mark still saying "sending": the
message may or may not have gone. The next worker sends it again with the same id, and says
so on the Communication (``in doubt``) and in ``fhir_sched_notice_attempts_total{result=
"in-doubt"}``: a receiver that keeps message ids (mail systems' duplicate filters, webhook
consumers per Standard Webhooks) sees it once. We chose a repeat over a loss: a reminder
that never comes costs a missed visit, one that comes twice costs nothing. The window is the
time one record unit takes, and records are committed as sends finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..ids import unique_id
from ..metrics import NOTICE_ATTEMPTS, NOTICES
from ..query import Cond, Entry, Query, SortKey
from ..resources.names import display_name
from ..scheduling.extensions import hold_expiry
from ..scheduling.telehealth import join_link
from ..service.resources import ResourceService
from ..storage.base import Unit
from ..storage.errors import StoreError
from ..timeutil import format_instant, parse_instant, to_us
from . import ics
from . import reminders as r
from .channels import Channel, Notice, Sent
from .follow import body_of, forever
from .links import Signer

log = logging.getLogger("fhir_sched.engage.delivery")

CTX = RequestContext.system("notices")
CLAIM = "notice/"
OWNER = "notice"
RETRY_OWNER = "notice-retry"
MAX_BACKOFF_SECONDS = 3600.0
MAX_PAGES = 5  # pages of due requests one step looks through for ones it can claim
RECORD_TRIES = 6


@dataclass(frozen=True, slots=True)
class Claimed:
    """A request claimed for one attempt: the channels still owed a message (``left``), those
    a crashed attempt may already have sent (``doubt``), and what earlier attempts did."""

    id: str
    body: dict[str, Any]
    version: int
    attempt: int
    left: tuple[str, ...]
    doubt: frozenset[str]
    done: tuple[str, ...] = ()
    ok: tuple[str, ...] = ()

    @property
    def in_doubt(self) -> bool:
        return bool(self.doubt)


@dataclass(frozen=True, slots=True)
class Outcome:
    sent: Sent
    channel: str
    kind: str
    text: str = ""
    skipped: bool = False  # opted out: nothing to retry and nothing to fix
    unsent: bool = False  # never attempted (handed back before the lease ran short)


def communication_id(request_id: str, version: int, channel: str) -> str:
    """One Communication per request version and channel: recording one send twice writes
    one resource."""
    return "dlv-" + hashlib.sha256(f"{request_id}|{version}|{channel}".encode()).hexdigest()[:40]


class Delivery:
    def __init__(self, resources: ResourceService, channels: Mapping[str, Channel], *,
                 signer: Callable[[], Awaitable[Signer]], link_base: str, uid_domain: str,
                 organizer: str = "", max_attempts: int = 6, retry_seconds: float = 30.0,
                 concurrency: int = 8, lease_seconds: float = 60.0, poll_seconds: float = 0.2
                 ) -> None:
        self.resources = resources
        self.store = resources.store
        self.channels = dict(channels)
        self.signer = signer
        self.link_base = link_base.rstrip("/")
        self.uid_domain = uid_domain
        self.organizer = organizer
        self.max_attempts = max(1, max_attempts)
        self.retry_seconds = retry_seconds
        self.slots = asyncio.Semaphore(max(1, concurrency))
        # Claimed per step: a few rounds of sends, so the last of them starts well inside
        # the lease; one that would not (a slow server) is handed back unsent.
        self.batch = max(1, concurrency) * 4
        self.lease = lease_seconds
        self.poll_seconds = poll_seconds
        self.worker = unique_id()

    async def run(self) -> None:
        try:
            await forever(self.step, "notice delivery", log, self.poll_seconds)
        finally:
            async def release(unit: Unit) -> None:
                # Claims of sends cut short: the next process may take them at once (their
                # marks still say "sending", so they go again as in doubt).
                await unit.release(OWNER, self.worker)

            with contextlib.suppress(Exception):
                await self.store.atomic(release)
            for channel in self.channels.values():
                try:
                    await channel.close()
                except Exception as exc:
                    log.warning("closing the %s channel: %s", channel.name, type(exc).__name__)

    async def claim_due(self, now: datetime) -> list[Claimed]:
        """Due requests, oldest first, claimed for this worker. Requests another worker holds
        (sending, or waiting out a retry's backoff) are passed over page by page, so a pile
        of failing ones never keeps the ones behind them from going out."""
        claimed: list[Claimed] = []
        after = None
        for _ in range(MAX_PAGES):
            page = await self.store.search(Query("CommunicationRequest", (
                Entry("status", (Cond("val", "=", "active"),)),
                Entry("occurrence", (Cond("lo", "<=", to_us(now)),))),
                sort=(SortKey("occurrence", field="lo"),), count=self.batch, after=after))
            ids = [id_ for id_, _ in page.rows]
            if ids:
                async def take(unit: Unit, ids: list[str] = ids) -> list[Claimed]:
                    return await self._claim(unit, ids, now)

                claimed += await self.store.atomic(take)
            if len(claimed) >= self.batch // 2 or page.next_after is None:
                break
            after = page.next_after
        return claimed

    async def step(self) -> int:
        """Claim what is due, send it, record it; how many were attempted."""
        claimed = await self.claim_due(datetime.now(UTC))
        if not claimed:
            return 0
        finished: asyncio.Queue[tuple[Claimed, list[Outcome]]] = asyncio.Queue()

        loop = asyncio.get_running_loop()
        latest = loop.time() + self.lease / 2  # start no send the lease might not cover

        async def one(item: Claimed) -> None:
            outcomes = []
            patient = await self._read(_patient_of(item.body) or "")
            for channel in item.left:
                async with self.slots:
                    if loop.time() > latest:
                        outcome = Outcome(Sent(False, retry=True, detail="not sent"), channel,
                                          r.kind_of(item.body), unsent=True)
                    else:
                        try:
                            outcome = await self._attempt(item, channel, patient)
                        except Exception as exc:  # one broken request must not stop the rest
                            log.error("composing notice %s failed: %s", item.id,
                                      type(exc).__name__)
                            outcome = Outcome(Sent(False, retry=True, detail="internal error"),
                                              channel, r.kind_of(item.body))
                outcomes.append(outcome)
            finished.put_nowait((item, outcomes))

        tasks = [asyncio.ensure_future(one(item)) for item in claimed]
        remaining = len(tasks)
        try:
            while remaining:
                group = [await finished.get()]
                while not finished.empty():
                    group.append(finished.get_nowait())
                remaining -= len(group)

                async def record(unit: Unit, g: list[tuple[Claimed, list[Outcome]]] = group
                                 ) -> None:
                    await self._record(unit, g)

                await self._keep_trying(record)
        finally:
            for task in tasks:
                task.cancel()
        return len(claimed)

    async def _keep_trying(self, record: Callable[[Unit], Awaitable[None]]) -> None:
        """Record what was sent, trying again for a while when the store refuses: these
        messages went out, and a record given up on makes them in doubt, sent again by
        whoever takes them over once the lease ends."""
        for attempt in range(RECORD_TRIES):
            try:
                await self.resources.atomic(record)
                return
            except (StoreError, FhirError) as exc:
                if attempt == RECORD_TRIES - 1:
                    raise
                log.warning("recording sent notices failed (%s); trying again",
                            type(exc).__name__)
                await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0))

    # -- 1. claim ------------------------------------------------------------------------------
    async def _claim(self, unit: Unit, ids: list[str], now: datetime) -> list[Claimed]:
        out = []
        stamp = format_instant(now)
        lease = format_instant(now + timedelta(seconds=self.lease))
        for id_ in ids:
            rec = await unit.get("CommunicationRequest", id_)
            body = body_of(rec)
            if rec is None or body is None or body.get("status") != "active" or not r.is_due(
                    body, now):
                continue
            if not await unit.claim(CLAIM + id_, OWNER, self.worker, expires=lease, now=stamp):
                continue
            kept = await unit.mark_get(CLAIM + id_)
            state = orjson.loads(kept) if kept else {}
            if state.get("v") != rec.version:  # staff changed it (put it back on): afresh
                state = {}
            attempt = int(state.get("n", 0)) + 1
            done = tuple(state.get("done") or ())
            left = tuple(c for c in r.channels_of(body) if c not in done) or ("?",)
            await unit.mark_put(CLAIM + id_, orjson.dumps(
                {**state, "n": attempt, "sending": list(left), "v": rec.version}).decode())
            out.append(Claimed(id_, body, rec.version, attempt, left,
                               frozenset(state.get("sending") or ()) & frozenset(left), done,
                               tuple(state.get("ok") or ())))
        return out

    # -- 2. send -------------------------------------------------------------------------------
    async def _attempt(self, item: Claimed, channel: str, patient: dict[str, Any] | None
                       ) -> Outcome:
        body = item.body
        kind = r.kind_of(body)
        if channel not in self.channels:
            shown = channel if channel != "?" else "(none)"
            return Outcome(Sent(False, detail=f"channel {shown} is not set up on this server"),
                           channel, kind)
        patient_ref = _patient_of(body)
        if channel in r.opted_out(patient):
            return Outcome(Sent(False, detail=f"the patient opted out of {channel}"), channel,
                           kind, skipped=True)
        to = r.address(patient, channel)
        if to is None:
            return Outcome(Sent(False, detail=f"the patient has no {channel} address"), channel,
                           kind)
        notice = await self._compose(item, kind, channel, to, patient_ref, patient)
        if channel in item.doubt:
            NOTICE_ATTEMPTS.labels(channel, "in-doubt").inc()
        sent = await self.channels[channel].send(notice)
        NOTICE_ATTEMPTS.labels(channel, "ok" if sent.ok else "retry" if sent.retry
                               else "failed").inc()
        return Outcome(sent, channel, kind, notice.text)

    async def _compose(self, item: Claimed, kind: str, channel: str, to: str,
                       patient_ref: str | None, patient: dict[str, Any] | None) -> Notice:
        body = item.body
        appt_ref = next((b.get("reference") for b in body.get("basedOn") or []
                         if str(b.get("reference", "")).startswith("Appointment/")), None)
        appt = await self._read(appt_ref) if appt_ref else None
        # the zone planned into the request, else the patient's (the same core extension)
        zone = r.patient_zone(body, r.patient_zone(patient, ZoneInfo("UTC")))
        if appt is None or not appt.get("start"):
            text = _payload_text(body) or "A message from your clinic."
            return Notice(item.id, channel, to, "A message from your clinic", text,
                          data=self._data(kind, item, appt_ref, patient_ref, None, ""))
        names = await self._names(appt)
        join = join_link(appt) or ""
        event = ics.appointment_event(appt, uid_domain=self.uid_domain, zone=zone.key,
                                      names=names, join_url=join)
        link = ""
        held = hold_expiry(appt)
        held_until = parse_instant(held) if held else None
        if patient_ref:
            signer = await self.signer()
            end = parse_instant(str(appt.get("end") or appt["start"]))
            until = held_until if kind == "offer" and held_until else end + timedelta(hours=1)
            token = signer.token(appt["id"], patient_ref.split("/", 1)[1], until)
            link = f"{self.link_base}/r/{token}"
        when = _when(appt, zone)
        title = event.summary if event else "your appointment"
        text = _words(kind, title, when, event, link, channel, _payload_text(body))
        subject = _SUBJECTS.get(kind, "{title}, {when}").format(title=title,
                                                                when=_short_when(appt, zone))
        invitation = None
        method = "CANCEL" if kind == "cancellation" else "REQUEST"
        if kind == "offer" and held_until is not None:
            text = text.replace("{until}", _when_instant(held_until, zone))
        if channel == "email" and event is not None and kind != "offer":
            attendee = ics.Person(display_name(patient) or "Patient", to)
            organizer = ics.Person("Clinic", self.organizer) if self.organizer else None
            event = replace(event, attendees=(attendee,), organizer=organizer)
            if kind == "cancellation":
                event = ics.cancelled(event, stamp=datetime.now(UTC))
            invitation = ics.calendar([event], method=method)
        data = self._data(kind, item, appt_ref, patient_ref, appt, link)
        if join and kind != "cancellation":
            data["join"] = join
            if channel == "sms":
                text += f" Join: {join}"
        return Notice(item.id, channel, to, subject, text, invitation, method, data)

    def _data(self, kind: str, item: Claimed, appt_ref: str | None, patient_ref: str | None,
              appt: dict[str, Any] | None, link: str) -> dict[str, Any]:
        return {"kind": kind, "communicationRequest": f"CommunicationRequest/{item.id}",
                "appointment": appt_ref, "patient": patient_ref,
                "start": appt.get("start") if appt else None,
                "end": appt.get("end") if appt else None,
                "status": appt.get("status") if appt else None, "link": link or None}

    async def _read(self, ref: str) -> dict[str, Any] | None:
        kind, _, id_ = ref.partition("/")
        if not id_:
            return None
        return body_of(await self.store.get(kind, id_))

    async def _names(self, appt: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in appt.get("participant") or []:
            ref = str(((p or {}).get("actor") or {}).get("reference") or "")
            if ref.startswith(("Practitioner/", "Location/", "HealthcareService/")):
                body = await self._read(ref)
                name = display_name(body)
                if name:
                    out[ref] = name
        return out

    # -- 3. record -----------------------------------------------------------------------------
    async def _record(self, unit: Unit, group: list[tuple[Claimed, list[Outcome]]]) -> None:
        now = datetime.now(UTC)
        for item, outcomes in group:
            key = CLAIM + item.id
            done, ok = list(item.done), list(item.ok)
            retry: list[Outcome] = []
            for outcome in outcomes:
                sent, channel = outcome.sent, outcome.channel
                comm_id = communication_id(item.id, item.version, channel)
                if await unit.get("Communication", comm_id) is not None:
                    done.append(channel)  # recorded already (a repeat of an in-doubt send)
                    continue
                if outcome.unsent or (not sent.ok and sent.retry
                                      and item.attempt < self.max_attempts):
                    retry.append(outcome)
                    continue
                status = "completed" if sent.ok else "not-done"
                comm = _communication(item, channel, status, sent, outcome, now)
                await self.resources.put_in_unit(unit, CTX, "Communication", comm_id, comm,
                                                 check_refs=False, authorize=False)
                done.append(channel)
                if sent.ok:
                    ok.append(channel)
                result = "sent" if sent.ok else "skipped" if outcome.skipped else "failed"
                NOTICES.labels(channel, outcome.kind, result).inc()
                if not sent.ok:
                    log.info("notice %s by %s %s: %s", item.id, channel, result, sent.detail)
            if not retry:
                current = body_of(await unit.get("CommunicationRequest", item.id))
                if current is not None and current.get("status") == "active":
                    skipped = all(o.skipped for o in outcomes) and not ok
                    after = "completed" if ok else "revoked" if skipped else "on-hold"
                    await self.resources.put_in_unit(unit, CTX, "CommunicationRequest", item.id,
                                                     {**current, "status": after},
                                                     check_refs=False, authorize=False)
                await self._settle(unit, key)
                continue
            attempted = any(not o.unsent for o in retry) or len(retry) < len(outcomes)
            state = {"n": item.attempt if attempted else item.attempt - 1, "sending": [],
                     "v": item.version, "done": done, "ok": ok,
                     "error": next((o.sent.detail for o in retry if not o.unsent), "")[:200]}
            await unit.mark_put(key, orjson.dumps(state).decode())
            await unit.release(OWNER, self.worker, [key])
            if attempted:
                backoff = min(self.retry_seconds * 2 ** (item.attempt - 1), MAX_BACKOFF_SECONDS)
                await unit.claim(key, RETRY_OWNER, item.id, expires=format_instant(
                    now + timedelta(seconds=backoff)), now=format_instant(now))
                log.info("notice %s: attempt %d failed (%s), next in %.0f s", item.id,
                         item.attempt, state["error"], backoff)

    async def _settle(self, unit: Unit, key: str) -> None:
        await unit.release(OWNER, self.worker, [key])
        await unit.mark_delete(key)


def _communication(item: Claimed, channel: str, status: str, sent: Sent, outcome: Outcome,
                   now: datetime) -> dict[str, Any]:
    body = item.body
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "basedOn": [{"reference": f"CommunicationRequest/{item.id}"}],
        "status": status,
        "category": body.get("category") or [],
        "medium": [r.medium(channel)] if channel in ("email", "sms", "webhook") else [],
        "about": [b for b in body.get("basedOn") or [] if isinstance(b, dict)],
        "note": [{"text": f"attempt {item.attempt}: {sent.detail}"[:500]}],
    }
    for key in ("subject", "recipient"):
        if body.get(key):
            comm[key] = body[key]
    if sent.ok:
        comm["sent"] = format_instant(now)
        comm["payload"] = [{"contentString": outcome.text}]
    else:
        comm["statusReason"] = {"text": sent.detail[:500]}
    if channel in item.doubt:
        comm["note"].append({"text": "sent again with the same message id: a server stopped "
                                     "between an earlier send and its record (in doubt)"})
    return comm


def _patient_of(body: dict[str, Any]) -> str | None:
    for ref in [body.get("subject"), *(body.get("recipient") or [])]:
        value = (ref or {}).get("reference") if isinstance(ref, dict) else None
        if isinstance(value, str) and value.startswith("Patient/"):
            return value
    return None


def _payload_text(body: dict[str, Any]) -> str:
    return "\n".join(str(p.get("contentString")) for p in body.get("payload") or []
                     if isinstance(p, dict) and p.get("contentString"))


def _when(appt: dict[str, Any], zone: ZoneInfo) -> str:
    start = parse_instant(str(appt["start"])).astimezone(zone)
    text = f"{start:%A} {start.day} {start:%B %Y}, {start:%H:%M}"
    if appt.get("end"):
        text += f"-{parse_instant(str(appt['end'])).astimezone(zone):%H:%M}"
    return f"{text} ({zone.key})"


def _when_instant(when: datetime, zone: ZoneInfo) -> str:
    local = when.astimezone(zone)
    return f"{local:%A} {local.day} {local:%B}, {local:%H:%M} ({zone.key})"


def _short_when(appt: dict[str, Any], zone: ZoneInfo) -> str:
    start = parse_instant(str(appt["start"])).astimezone(zone)
    return f"{start:%a} {start.day} {start:%b} {start:%H:%M}"


_SUBJECTS = {"reminder": "Reminder: {title}, {when}",
             "offer": "A time has opened: {title}, {when}",
             "update": "Moved: {title}, now {when}",
             "cancellation": "Cancelled: {title}, {when}"}
_LEADS = {"reminder": "This is a reminder of your appointment.",
          "offer": "A time you asked for has opened. It is held for you until {until}.",
          "update": "Your appointment has moved. The new time is below.",
          "cancellation": "Your appointment below has been cancelled."}


def _words(kind: str, title: str, when: str, event: ics.Event | None, link: str, channel: str,
           extra: str) -> str:
    """The message text (the subject is the caller's: shorter, it names no zone)."""
    if channel == "sms":  # one short text
        text = _SUBJECTS.get(kind, "{title}, {when}").format(title=title, when=when) + "."
        if link and kind == "offer":
            text += f" Held until {{until}}. Accept or decline: {link}"
        elif link and kind != "cancellation":
            text += f" Confirm or cancel: {link}"
        return text
    lines = [_LEADS.get(kind, extra or "A message about your appointment."), "",
             f"  {title}", f"  When: {when}"]
    if event is not None and event.location:
        lines.append(f"  Where: {event.location}")
    if event is not None and event.description:
        lines += [f"  {line}" for line in event.description.splitlines() if line]
    if extra and kind in _LEADS:
        lines += ["", extra]
    if link:
        lines += ["", {"cancellation": "To stop these messages: ",
                       "offer": "To accept or decline it: "}.get(
            kind, "To confirm, cancel or stop these messages: ") + link]
    return "\n".join(lines) + "\n"
