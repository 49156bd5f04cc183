"""One settings object, read from flags and ``FHIR_SCHED_<NAME>`` environment variables.

Every setting has an environment form so that the same image can be configured by an orchestrator
without a command line, and flags win over the environment so a developer can override one thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

AUTH_MODES = ("smart", "none")


@dataclass(frozen=True, slots=True)
class Settings:
    store: str = "sqlite:///fhir-sched.db"
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/fhir"
    # Public base URL for Bundle links and Location headers; derived from the request if empty.
    # FHIR_SCHED_BASE_URL (--base-url) is its issue-13 name; FHIR_SCHED_PUBLIC_BASE still works.
    public_base: str = ""
    base_url: str = ""
    # Without a base URL, the Host names requests may carry (comma-separated; "*" for any).
    allowed_hosts: str = ""
    max_body_bytes: int = 4 * 1024 * 1024
    # Edge limits (rest/edge.py): headers and body must arrive in time, a request ends in time.
    http_header_seconds: int = 10
    http_body_seconds: int = 60
    http_request_seconds: int = 120
    http_keepalive_seconds: int = 5
    http_max_headers: int = 100
    http_max_header_bytes: int = 16 * 1024
    http_max_connections: int = 1000
    default_count: int = 50
    max_count: int = 1000
    # Bounded work per search (issue 13): refused with a 400 before the search runs.
    search_max_params: int = 50
    # Entries one batch or transaction Bundle may hold.
    max_bundle_entries: int = 1000
    # A search (each of its queries: the page, the total, the includes) is stopped past this.
    search_max_ms: int = 10000
    search_max_or_values: int = 100
    search_max_includes: int = 10
    search_max_sort_keys: int = 5
    hold_seconds: int = 600
    # The most occurrences one $book of a recurring series writes (its unit holds the store's
    # writer meanwhile); a series is otherwise bounded by its resources' planning horizon.
    max_series_occurrences: int = 520
    sweep_seconds: int = 60
    # Bookings nobody arrived for this many minutes after their start become no-shows (the
    # sweeper marks them, giving their time and referral visit back); 0: never automatically.
    noshow_grace_minutes: int = 0
    # Eligibility (issue 14): the payer gateway a CoverageEligibilityRequest is posted to
    # (empty: the local checker, the Coverage rules alone), its bearer token (environment
    # only), the time budget for its answer, how long an answer is reused for the same
    # Coverage, and what a booking does when no answer comes: "flag" (book, flagged
    # eligibility-unverified) or "refuse".
    eligibility_url: str = ""
    eligibility_token: str = ""
    eligibility_timeout_ms: int = 3000
    eligibility_cache_minutes: int = 1440
    eligibility_on_failure: str = "flag"
    # CDS Hooks appointment-book: the services asked before each $book commits
    # (comma-separated URLs, each a service's own endpoint) and their time budget.
    cds_services: str = ""
    cds_timeout_ms: int = 2000
    # A booking may start at most this many seconds in the past (0: not at all).
    past_grace_seconds: int = 0
    # The longest booking (booked, pending, arrived...) that takes time on calendars, in hours.
    max_appointment_hours: int = 24
    # The same for what a calendar of record reports (an SIU feed of record, a system job): it
    # records another system's booking, which may be a multi-day course, so its cap is wider.
    max_recorded_appointment_hours: int = 168
    # "full" makes every acknowledged write survive an OS crash or power loss, not just a process
    # crash; "normal" is faster and still survives a killed server process.
    sqlite_synchronous: str = "full"
    log_level: str = "info"
    # Bulk Data $export: where the files go (default: beside a SQLite store, else the temp
    # directory) and how long a finished export is kept.
    export_dir: str = ""
    export_ttl_hours: int = 24
    # Server processes on the one store (uvicorn's supervisor restarts one that dies).
    workers: int = 1
    # "json" (one object per line), "text", or "auto": text on a terminal, else JSON.
    log_format: str = "auto"
    # One log line per request: request id, method, route template, status, duration.
    access_log: bool = True
    # The bearer token Prometheus sends to /metrics when auth is on (unset: /metrics is 401).
    metrics_token: str = ""
    # Where --workers processes leave their metrics for the one a scrape reaches (serve makes
    # a temporary directory when unset; see metrics_share).
    metrics_dir: str = ""
    # How long a thread computing in Python (validation of a large body, a $find, SQLite row
    # building) may keep the interpreter before the event loop gets it back, in microseconds:
    # Python's 5 ms default let two such threads hold the loop ~100 ms at the 99th percentile.
    thread_switch_us: int = 1000
    # HL7 v2: the MLLP listener (0: none), on ``host``; TLS when a certificate is given.
    mllp_port: int = 0
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_max_frame_bytes: int = 1024 * 1024
    mllp_idle_seconds: int = 300
    mllp_max_connections: int = 64
    # A message whose handling takes longer gets AE 207; the connection carries on.
    mllp_handler_seconds: int = 30
    # MLLP release 1 (the common one) or 2 (commit acknowledgement blocks before each ACK).
    mllp_release: int = 1
    # Per-sender settings (TOML, see hl7v2/senders.py) and the zone for times without offset.
    hl7v2_config: str = ""
    hl7v2_timezone: str = "UTC"
    # Outbound SIU to subscribed Endpoints: who we say we are (MSH-3/MSH-4), the first retry's
    # delay (doubling each time, at most 5 minutes) and the attempts before a dead letter.
    hl7v2_application: str = "FHIR-SCHED"
    hl7v2_facility: str = ""
    hl7v2_retry_ms: int = 1000
    hl7v2_max_attempts: int = 10
    # How long the raw bytes of inbound messages are kept (0: for good); outcomes and ACKs stay.
    hl7v2_raw_retention_days: int = 30
    # How long audit entries are kept (0: for good, the default; many rules ask for years).
    audit_retention_days: int = 0
    # "on": FastAPI's OpenTelemetry spans, metrics and logs, for a provider the operator sets
    # up (opentelemetry-instrument, or the OTEL_* environment); "off" costs nothing per request.
    opentelemetry: str = "off"
    # "smart": every request but discovery needs a bearer token; "none": anonymous, for
    # development only (a warning at start and an ``X-FHIR-Sched-Auth: none`` header).
    auth: str = "smart"
    # Other authorization servers whose JWTs are accepted (comma-separated issuer URLs), and the
    # audiences their tokens may name (default: this server's FHIR base).
    trust_issuer: str = ""
    trust_audience: str = ""
    # Set both to ask the trusted issuers about each token (RFC 7662 introspection, HTTP
    # Basic) instead of checking signatures: opaque tokens then work, and revocations count.
    # The secret is read from the environment only, never from a command line.
    trust_introspection_client: str = ""
    trust_introspection_secret: str = ""
    # Browser origins allowed to call the API (comma-separated, or "*"); none by default. The
    # SMART discovery and token endpoints answer any origin (no cookies are involved).
    cors_origins: str = ""
    # Sign-in attempts accepted per client address per minute (then 429).
    auth_logins_per_minute: int = 20
    # With auth on, requests without a token may read the clinic directory and ask $find for
    # free time (no patient): what a booking widget on the clinic's site shows before sign-in
    # (rest/public_view.py). "off": every request needs a token. Requests per client address
    # per minute (the socket peer: no proxy header is trusted), then 429.
    public_view: bool = True
    public_view_per_minute: int = 120
    # Reminders (issue 15): lead times for visit types that name none ("72h,24h"; m h d; empty:
    # none), and the quiet hours in the patient's zone when none go out (empty: none; a
    # reminder due then goes out before they begin).
    reminders: str = "72h,24h"
    quiet_hours: str = "21:00-08:00"
    # Email: the SMTP server (empty host: no email channel), its security ("starttls": required,
    # "tls": implicit TLS, "auto": STARTTLS when offered, "none"), the sender address, and a
    # login (the password from the environment only).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: str = "auto"
    smtp_from: str = ""
    smtp_user: str = ""
    smtp_password: str = ""
    # A signed webhook (Standard Webhooks: webhook-id, -timestamp, -signature HMAC-SHA256) that
    # receives every notice as JSON (empty: none); its secret from the environment only.
    webhook_url: str = ""
    webhook_secret: str = ""
    # SMS through an HTTP gateway: each text is POSTed as JSON {to, from, text} with the bearer
    # token (environment only); empty URL: no SMS channel.
    sms_url: str = ""
    sms_token: str = ""
    sms_from: str = ""
    # Notices sent at once, and attempts before a failing one is put on hold for staff.
    delivery_concurrency: int = 8
    delivery_max_attempts: int = 6
    delivery_retry_seconds: int = 30
    # How long a claimed message is its worker's alone: after a crash, others wait this long
    # before sending it again (each send's timeouts are kept to a quarter of it).
    delivery_lease_seconds: int = 60
    # The key that signs the confirm/cancel links in messages (environment only; empty: one is
    # made at first start and kept in the store, so every process shares it).
    link_secret: str = ""
    # Join links of virtual visit types: a URL template whose {room} an unguessable room name
    # fills (empty: virtual visits get no link).
    telehealth_url_template: str = ""
    # The late-cancellation measure: a cancellation less than this many hours before the
    # visit's start (or after it) is late.
    late_cancel_hours: int = 24
    # KPIs: the days back (and 90 ahead) read into memory soon after start, so the first report
    # of any period in them is fast (about 240 bytes a visit; 0: nothing read ahead of asking).
    kpi_warm_days: int = 400
    # How long a waitlist offer (a hold for the best waiting patient) stays open, in seconds.
    waitlist_offer_seconds: int = 3600
    # Where Subscription notifications may go: https:// always, plus these URL prefixes
    # (comma-separated, e.g. http://10.0.0.5:8080/ for an engine inside the network).
    subscription_endpoints: str = ""
    # Attempts at a notification before its Subscription is put in error, the first retry's
    # delay (doubling), and the heartbeat period of a subscription that names none (0: none).
    subscription_max_attempts: int = 6
    subscription_retry_seconds: int = 5
    # Websocket Subscriptions, per process: sockets open at once, and subscriptions bound on
    # one socket (a browser opens few sockets, so one carries several); how long a binding
    # token from $get-ws-binding-token is good for (it binds once).
    websocket_max: int = 1000
    websocket_max_bindings: int = 20
    websocket_token_seconds: int = 60
    # SMART Scheduling Links ($bulk-publish): which Schedules are published, openly and
    # without a token: "" (none: the manifest is a 404), "all", or a comma-separated list of
    # references (Schedule/x, or an actor: Location/x, Practitioner/x, PractitionerRole/x,
    # HealthcareService/x, Device/x). Schedules of a Patient or RelatedPerson never are.
    publish: str = ""
    # Days ahead published (from today), the longest a publication is served before it is
    # made again (also the Cache-Control max-age), and the most Slots one publication holds.
    publish_days: int = 28
    publish_refresh_seconds: int = 60
    publish_max_slots: int = 250_000
    # The booking deep link of a published Slot: an http(s) URL template with {schedule},
    # {start}, {end} and {slot} (URL-encoded); "" publishes no link. And the phone number
    # published when the Slot's Location (or service) lists none.
    booking_link: str = ""
    booking_phone: str = ""
    # The front-desk console's CSP frame-ancestors: "" (not framed), or the EHR origins that
    # embed it (e.g. "https://ehr.example.org").
    console_frame_ancestors: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Environment first, then explicit (non-None) overrides such as command-line flags."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = os.environ.get(f"FHIR_SCHED_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("auth", "smart") not in AUTH_MODES:
            raise SystemExit(f"FHIR_SCHED_AUTH / --auth must be one of {', '.join(AUTH_MODES)}, "
                             f"got {values['auth']!r}")
        if values.get("base_url") and not values.get("public_base"):
            values["public_base"] = values["base_url"]
        if values.get("opentelemetry", "off") not in ("on", "off"):
            raise SystemExit("FHIR_SCHED_OPENTELEMETRY must be on or off, got "
                             f"{values['opentelemetry']!r}")
        if values.get("eligibility_on_failure", "flag") not in ("flag", "refuse"):
            raise SystemExit("FHIR_SCHED_ELIGIBILITY_ON_FAILURE must be flag or refuse, got "
                             f"{values['eligibility_on_failure']!r}")
        if values.get("smtp_security", "auto") not in ("auto", "starttls", "tls", "none"):
            raise SystemExit("FHIR_SCHED_SMTP_SECURITY must be auto, starttls, tls or none, got "
                             f"{values['smtp_security']!r}")
        template = values.get("telehealth_url_template", "")
        if template and ("{room}" not in template
                         or not template.startswith(("https://", "http://"))):
            raise SystemExit("FHIR_SCHED_TELEHEALTH_URL_TEMPLATE must be an http(s) URL with "
                             f"{{room}} in it, got {template!r}")
        link = values.get("booking_link", "")
        if link and not link.startswith(("https://", "http://")):
            raise SystemExit(f"FHIR_SCHED_BOOKING_LINK must be an http(s) URL, got {link!r}")
        for name, low, high in (("publish_days", 1, 366), ("publish_refresh_seconds", 1, 86400),
                                ("publish_max_slots", 1, 5_000_000),
                                ("public_view_per_minute", 1, 1_000_000)):
            value = values.get(name)
            if value is not None and not low <= value <= high:
                raise SystemExit(f"FHIR_SCHED_{name.upper()} must be between {low} and "
                                 f"{high}, got {value}")
        return cls(**values)


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    if type_name in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(f"FHIR_SCHED_{name.upper()} must be an integer, got {raw!r}") from None
    if type_name in ("bool", bool):
        if raw.strip().lower() in ("1", "on", "true", "yes"):
            return True
        if raw.strip().lower() in ("0", "off", "false", "no"):
            return False
        raise SystemExit(f"FHIR_SCHED_{name.upper()} must be on or off, got {raw!r}")
    return raw


def to_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``FHIR_SCHED_*`` variables ``from_env`` reads back: how a worker
    process started afresh (``--workers``) gets what the command line said."""
    out: dict[str, str] = {}
    for f in fields(settings):
        if f.name == "extra":
            continue
        value = getattr(settings, f.name)
        out[f"FHIR_SCHED_{f.name.upper()}"] = (
            ("on" if value else "off") if isinstance(value, bool) else str(value))
    return out
