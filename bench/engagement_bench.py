"""Engagement benchmark (issue 15): how fast the server acts on changes, and what acting costs
booking.

    python bench/engagement_bench.py                 # everything, default sizes
    python bench/engagement_bench.py --bookings 600 --reminders 2000 --samples 100

In one run, each part on a fresh SQLite store and a real ``fhir-sched serve``:

1. **Booking, plain** (the baseline): ``--bookings`` Appointments POSTed by 16 clients at once,
   on a server with no channel, no subscription and no waitlist.
2. **Booking, engaged**: the same load with every worker running: email and webhook
   reminders configured (72 h and 24 h: two CommunicationRequests per booking, each for both
   channels), 10 active rest-hook Subscriptions, 50 waitlist entries. Printed as a ratio of
   (1): target >= 0.90 (the workers slow booking by at most 10 %). The reminder planner waits
   while bookings pour in (at most 30 s behind the feed), so this measures a burst; the run
   also prints how long after the burst every booking had its reminders.
3. **Change -> rest-hook**: ``--samples`` bookings one after another; the time from the POST's
   answer (the commit) to the notification reaching a local HTTP receiver. Target p95 <= 250 ms.
4. **Freed time -> offer sent**: ``--samples`` cancellations one after another, each with a
   patient waiting for that time; from the cancel's answer to the offer email reaching a local
   SMTP server (aiosmtpd). Target p95 <= 1 s.
5. **Reminder delivery**: ``--reminders`` due messages made while no sender runs, then a server
   with SMTP started; messages per second until the SMTP server has them all. Target >= 200/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import Server, pct
from tests.support.scheduling import hours, need, schedule, template, visit_type
from tests.support.sinks import SmtpSink

FHIR = {"content-type": "application/fhir+json"}
SYSTEM = "https://bench.example/visit-types"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://fhir-sched.org/fhir/SubscriptionTopic/"
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class Receiver:
    """A local HTTP receiver noting when each notification arrived, by focus reference."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.monotonic()
                receiver.hits += 1
                try:
                    for e in orjson.loads(body).get("entry", [])[1:]:
                        receiver.arrived.setdefault(e["fullUrl"].split("/fhir/", 1)[-1], now)
                except (ValueError, KeyError):
                    pass
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def patient(client: httpx.Client, base: str, n: int, email: bool = True) -> str:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"given": [f"P{n}"]}]}
    if email:
        body["telecom"] = [{"system": "email", "value": f"p{n}@bench.example"}]
    r = client.post(f"{base}/Patient", headers=FHIR, json=body)
    r.raise_for_status()
    return f"Patient/{r.json()['id']}"


def clinic(client: httpx.Client, base: str, tag: str) -> None:
    client.put(f"{base}/Practitioner/{tag}", headers=FHIR, json={
        "resourceType": "Practitioner", "id": tag}).raise_for_status()
    client.put(f"{base}/Schedule/{tag}", headers=FHIR, json=schedule(
        tag, f"Practitioner/{tag}", template("UTC", hours(ALL_WEEK, "00:00:00", "23:59:00")))
    ).raise_for_status()
    client.put(f"{base}/HealthcareService/{tag}", headers=FHIR, json={
        "resourceType": "HealthcareService", "id": tag, "extension": [
            visit_type(SYSTEM, f"consult-{tag}", 30, need("Practitioner"))]}).raise_for_status()


def slot(day: datetime, i: int) -> datetime:
    """The i-th half hour from ``day`` (midnight), 46 a day: the template's hours end at
    23:59, so the 23:30 half hour does not fit."""
    return day + timedelta(days=i // 46, minutes=30 * (i % 46))


def booking(tag: str, who: str, start: datetime) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked", "start": iso(start),
            "end": iso(start + timedelta(minutes=30)),
            "appointmentType": {"coding": [{"system": SYSTEM, "code": f"consult-{tag}"}]},
            "participant": [{"actor": {"reference": f"Practitioner/{tag}"},
                             "status": "accepted"},
                            {"actor": {"reference": who}, "status": "accepted"}]}


async def book_load(base: str, patients: list[str], n: int, tag: str) -> tuple[float, float]:
    """n bookings by 16 clients at once, each at its own half hour; (per second, p95 ms)."""
    day = (datetime.now(UTC) + timedelta(days=5)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    latencies: list[float] = []
    queue = list(range(n))

    async def client_loop(http: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            r = await http.post(f"{base}/Appointment", headers=FHIR, json=booking(
                tag, patients[i % len(patients)], slot(day, i)))
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code != 201:
                raise SystemExit(f"booking refused: {r.status_code} {r.text[:300]}")

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(16)))
    return n / (time.perf_counter() - began), pct(latencies, 95)


def subscribe(client: httpx.Client, base: str, endpoint: str, topic: str,
              filters: tuple[str, ...] = ()) -> str:
    body: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": "bench",
        "criteria": TOPIC + topic, "channel": {"type": "rest-hook", "endpoint": endpoint,
                                               "payload": "application/fhir+json"}}
    if filters:
        body["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                            "valueString": f} for f in filters]}
    r = client.post(f"{base}/Subscription", headers=FHIR, json=body)
    r.raise_for_status()
    sid = str(r.json()["id"])
    deadline = time.monotonic() + 30
    while client.get(f"{base}/Subscription/{sid}").json()["status"] != "active":
        if time.monotonic() > deadline:
            raise SystemExit("a subscription was not activated")
        time.sleep(0.05)
    return sid


def waitlist_entry(client: httpx.Client, base: str, tag: str, who: str) -> None:
    client.post(f"{base}/Appointment", headers=FHIR, json={
        "resourceType": "Appointment", "status": "waitlist",
        "appointmentType": {"coding": [{"system": SYSTEM, "code": f"consult-{tag}"}]},
        "participant": [{"actor": {"reference": who}, "status": "needs-action"}],
        "requestedPeriod": [{"start": iso(datetime.now(UTC)),
                             "end": iso(datetime.now(UTC) + timedelta(days=60))}]}
                ).raise_for_status()


def engaged_env(smtp: SmtpSink, hook_port: int) -> dict[str, str]:
    return {"FHIR_SCHED_SMTP_HOST": "127.0.0.1", "FHIR_SCHED_SMTP_PORT": str(smtp.port),
            "FHIR_SCHED_SMTP_SECURITY": "none", "FHIR_SCHED_SMTP_FROM": "bench@bench.example",
            "FHIR_SCHED_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/webhook",
            "FHIR_SCHED_QUIET_HOURS": "",
            "FHIR_SCHED_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1"}


def run_booking(args: argparse.Namespace, smtp: SmtpSink, hook: Receiver) -> None:
    results = {}
    for label, engaged in (("plain", False), ("engaged", True), ("plain again", False)):
        with tempfile.TemporaryDirectory() as tmp, Server(
                Path(tmp) / "b.db", engaged_env(smtp, hook.port) if engaged else {}) as srv, \
                httpx.Client(timeout=60) as client:
            tag = f"b{int(time.time() * 1000) % 10**8}"
            clinic(client, srv.base, tag)
            people = [patient(client, srv.base, n) for n in range(50)]
            if engaged:
                for n in range(10):
                    subscribe(client, srv.base, f"http://127.0.0.1:{hook.port}/s{n}",
                              ("appointment-booked", "appointment-changed",
                               "slot-freed")[n % 3])
                for who in people:
                    waitlist_entry(client, srv.base, tag, who)
            rate, p95 = asyncio.run(book_load(srv.base, people, args.bookings, tag))
            results[label] = rate
            print(f"booking, {label:<12} {rate:8.1f} bookings/s   p95 {p95:6.1f} ms")
            if engaged:  # the planner waits out a burst: how long until it caught up
                ended = time.monotonic()
                while client.get(f"{srv.base}/CommunicationRequest?_summary=count").json()[
                        "total"] < 2 * args.bookings and time.monotonic() - ended < 120:
                    time.sleep(0.05)
                print(f"  reminders planned for every booking {time.monotonic() - ended:.1f} s "
                      "after the burst ended (2 per booking: 72 h and 24 h, email + webhook)")
    baseline = (results["plain"] + results["plain again"]) / 2
    print(f"booking, engaged / plain (mean of the plain runs before and after): "
          f"{results['engaged'] / baseline:.2f}x   (target >= 0.90)")


def run_resthook(args: argparse.Namespace, smtp: SmtpSink, hook: Receiver) -> None:
    with tempfile.TemporaryDirectory() as tmp, Server(
            Path(tmp) / "h.db", engaged_env(smtp, hook.port)) as srv, \
            httpx.Client(timeout=60) as client:
        tag = "hook"
        clinic(client, srv.base, tag)
        who = patient(client, srv.base, 1, email=False)
        subscribe(client, srv.base, f"http://127.0.0.1:{hook.port}/latency",
                  "appointment-booked", (f"Appointment?patient={who}",))
        day = (datetime.now(UTC) + timedelta(days=3)).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
        waits = []
        for i in range(args.samples):
            r = client.post(f"{srv.base}/Appointment", headers=FHIR,
                            json=booking(tag, who, slot(day, i)))
            answered = time.monotonic()
            ref = f"Appointment/{r.json()['id']}"
            deadline = answered + 10
            while ref not in hook.arrived and time.monotonic() < deadline:
                time.sleep(0.001)
            waits.append((hook.arrived.get(ref, deadline) - answered) * 1000)
            time.sleep(0.02)
        print(f"change -> rest-hook        p50 {pct(waits, 50):6.1f} ms   p95 "
              f"{pct(waits, 95):6.1f} ms   (target p95 <= 250 ms; {args.samples} bookings)")


def run_offers(args: argparse.Namespace, smtp: SmtpSink, hook: Receiver) -> None:
    with tempfile.TemporaryDirectory() as tmp, Server(
            Path(tmp) / "o.db", {**engaged_env(smtp, hook.port), "FHIR_SCHED_REMINDERS": ""}
    ) as srv, httpx.Client(timeout=60) as client:
        tag = "offer"
        clinic(client, srv.base, tag)
        holder = patient(client, srv.base, 0, email=False)
        day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
        waits = []
        for i in range(args.samples):
            address = f"w{i}-{tag}@bench.example"
            r = client.post(f"{srv.base}/Patient", headers=FHIR, json={
                "resourceType": "Patient", "telecom": [{"system": "email", "value": address}]})
            waiting = f"Patient/{r.json()['id']}"
            when = slot(day, i)
            appt = client.post(f"{srv.base}/Appointment", headers=FHIR,
                               json=booking(tag, holder, when)).json()
            client.post(f"{srv.base}/Appointment", headers=FHIR, json={
                "resourceType": "Appointment", "status": "waitlist",
                "appointmentType": {"coding": [{"system": SYSTEM, "code": f"consult-{tag}"}]},
                "participant": [{"actor": {"reference": waiting}, "status": "needs-action"}],
                "requestedPeriod": [{"start": iso(when), "end": iso(when + timedelta(
                    minutes=30))}]}).raise_for_status()
            time.sleep(0.05)
            client.put(f"{srv.base}/Appointment/{appt['id']}", headers=FHIR,
                       json={**appt, "status": "cancelled"}).raise_for_status()
            answered = time.monotonic()
            deadline = answered + 10
            while not smtp.to(address) and time.monotonic() < deadline:
                time.sleep(0.002)
            waits.append((time.monotonic() - answered) * 1000)
        print(f"freed time -> offer sent  p50 {pct(waits, 50):6.1f} ms   p95 "
              f"{pct(waits, 95):6.1f} ms   (target p95 <= 1000 ms; {args.samples} "
              "cancellations)")


def run_reminders(args: argparse.Namespace, smtp: SmtpSink, hook: Receiver) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.db"
        with Server(path) as srv, httpx.Client(timeout=120) as client:
            people = [patient(client, srv.base, 10_000 + n) for n in range(100)]
            medium = [{"coding": [{"system": "https://fhir-sched.org/fhir/CodeSystem/"
                                             "notice-channel", "code": "email"}]}]
            for chunk in range(0, args.reminders, 500):
                entries = [{"resource": {
                    "resourceType": "CommunicationRequest", "status": "active",
                    "medium": medium, "subject": {"reference": people[i % 100]},
                    "recipient": [{"reference": people[i % 100]}],
                    "occurrenceDateTime": "2026-01-01T00:00:00Z",
                    "payload": [{"contentString": f"Flu shots are here ({i})."}]},
                    "request": {"method": "POST", "url": "CommunicationRequest"}}
                    for i in range(chunk, min(args.reminders, chunk + 500))]
                client.post(srv.base, headers=FHIR, json={
                    "resourceType": "Bundle", "type": "transaction", "entry": entries}
                ).raise_for_status()
        before = len(smtp.mails)
        began = time.monotonic()
        with Server(path, engaged_env(smtp, hook.port)):
            deadline = began + 600
            while len(smtp.mails) - before < args.reminders and time.monotonic() < deadline:
                time.sleep(0.01)
            took = time.monotonic() - began
        sent = len(smtp.mails) - before
        print(f"reminder delivery          {sent / took:8.1f} messages/s   ({sent} to a local "
              f"SMTP server in {took:.1f} s, server start included; target >= 200/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=600)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--reminders", type=int, default=2000)
    parser.add_argument("--only", choices=("booking", "resthook", "offers", "reminders"))
    args = parser.parse_args()
    hook = Receiver()
    with SmtpSink() as smtp:
        for name, part in (("booking", run_booking), ("resthook", run_resthook),
                           ("offers", run_offers), ("reminders", run_reminders)):
            if args.only in (None, name):
                part(args, smtp, hook)


if __name__ == "__main__":
    main()
