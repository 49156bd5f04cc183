"""The front-desk console (issue 16, item 1) in headless Debian Chromium, driven by Playwright,
against a real server with auth on: a practitioner signs in through SMART (the console is a
public client, PKCE), then finds and books, drags to reschedule, cancels, checks in, blocks
time, works the waitlist, and sees another desk's change live. axe-core finds no serious or
critical accessibility violation on any screen; a screenshot of each is kept
(``test-artifacts/``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect, sync_playwright

from fhir_sched.rest.console import CONSOLE_CLIENT_ID, CONSOLE_SCOPE
from tests.support import web
from tests.support.browser import fill_login, launch, screenshot, serious_violations
from tests.support.launch import add_user
from tests.support.scheduling import hours, need, template, uid, visit_type
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

PASSWORD = "front desk password 1"
SYSTEM = "https://clinic.example/visit-types"
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OFFER = "https://fhir-sched.org/fhir/StructureDefinition/waitlist-offer"


@dataclass
class Clinic:
    server: ServerProcess
    headers: dict[str, str]
    doctors: list[str]  # Practitioner references: Dr. Ada Ames, Dr. Ben Bryce
    tag: str

    @property
    def origin(self) -> str:
        return self.server.base.removesuffix("/fhir")

    def put(self, body: dict[str, Any]) -> None:
        r = web.put(f"{self.server.base}/{body['resourceType']}/{body['id']}",
                    headers=self.headers, json=body)
        assert r.status_code in (200, 201), r.text

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        r = web.post(f"{self.server.base}/{body['resourceType']}", headers=self.headers,
                     json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = web.get(f"{self.server.base}/{path}", headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def patient(self, family: str) -> str:
        return f"Patient/{self.post({'resourceType': 'Patient', 'name': [{'family': family, 'given': ['Pat']}]})['id']}"  # noqa: E501

    def booking(self, doctor: str, patient: str, start: datetime, minutes: int = 30
                ) -> dict[str, Any]:
        return self.post({
            "resourceType": "Appointment", "status": "booked", "start": _iso(start),
            "end": _iso(start + timedelta(minutes=minutes)),
            "appointmentType": {"coding": [{"system": SYSTEM, "code": f"checkup-{self.tag}"}]},
            "participant": [{"actor": {"reference": doctor}, "status": "accepted"},
                            {"actor": {"reference": patient}, "status": "accepted"}]})


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(n: int, hour: int) -> datetime:
    """``hour`` o'clock UTC (the browser's zone here) ``n`` days from today."""
    return (datetime.now(UTC) + timedelta(days=n)).replace(hour=hour, minute=0, second=0,
                                                           microsecond=0)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    # the console is a browser app over the public API; the stores are covered by the API
    # tests, so one store (SQLite) here
    url = store_url("sqlite", None, "fhir_sched_console")
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"})
    admin = BackendClient.new("console-admin", "ES384")
    register_backend(url, admin, "system/*.cruds", tmp_path_factory.mktemp("keys"))
    assert register(url, CONSOLE_CLIENT_ID, CONSOLE_SCOPE, "--redirect-uri",
                    f"http://127.0.0.1:{server.port}/console/", "--public").returncode == 0
    add_user(url, "desk", PASSWORD, "Practitioner/desk-ada")
    server.start()
    try:
        token = get_token(server.base, admin, "system/*.cruds")
        tag = uid()
        c = Clinic(server, {"authorization": f"Bearer {token}",
                            "content-type": "application/fhir+json"},
                   ["Practitioner/desk-ada", "Practitioner/desk-ben"], tag)
        c.put({"resourceType": "Location", "id": "desk-room", "name": "Room 1",
               "status": "active"})
        for pid, given, family in (("desk-ada", "Ada", "Ames"), ("desk-ben", "Ben", "Bryce")):
            c.put({"resourceType": "Practitioner", "id": pid,
                   "name": [{"prefix": ["Dr."], "given": [given], "family": family}]})
            c.put({"resourceType": "Schedule", "id": f"{pid}-s", "active": True,
                   "actor": [{"reference": f"Practitioner/{pid}"}],
                   "extension": [template("UTC", hours(ALL_WEEK, "07:00:00", "19:00:00"))]})
        c.put({"resourceType": "HealthcareService", "id": "desk-hs", "name": "General clinic",
               "extension": [visit_type(SYSTEM, f"checkup-{tag}", 30, need("Practitioner"))]})
        yield c
    finally:
        server.stop()
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def desk(browser: Browser, clinic: Clinic) -> Iterator[Page]:
    """A fresh browser signed in to the console as the practitioner user."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    yield sign_in(context, clinic)
    context.close()


def sign_in(context: BrowserContext, clinic: Clinic) -> Page:
    page = context.new_page()
    page.csp_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.csp_errors.append(m.text)  # type: ignore[attr-defined]
            if "Content Security Policy" in m.text else None)
    page.goto(f"{clinic.origin}/console/")
    fill_login(page, "desk", PASSWORD)
    page.wait_for_selector("body[data-ready=true]", timeout=30000)
    return page


# Elements (shadow roots included) reaching past the viewport's right edge.
WIDER_THAN_SCREEN = """() => { const out = []; const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > innerWidth + 1) out.push(`${el.tagName}.${el.className} ${Math.round(r.right)}`);
    if (el.shadowRoot) walk(el.shadowRoot);
  } }; walk(document); return out.slice(0, 10); }"""


def _no_serious_violations(page: Page) -> None:
    assert serious_violations(page) == []


def _entry(page: Page, label: str) -> Any:
    return page.locator("fs-grid button.entry", has_text=label)


def _show_day(page: Page, n: int) -> None:
    """The day view of ``n`` days from today, by the console's bookmarkable address."""
    day = _day(n, 0).date().isoformat()
    page.evaluate(f"location.hash = 'calendar/{day}/day'")
    expect(page.locator("fs-console .toolbar h2")).to_contain_text(
        _day(n, 0).strftime("%B %-d, %Y"))


# --------------------------------------------------------------------------- signing in


def test_a_practitioner_signs_in_and_sees_the_week(desk: Page, clinic: Clinic) -> None:
    expect(desk.locator("header")).to_contain_text("Signed in as")
    grid = desk.locator("fs-grid")
    expect(grid.get_by_role("rowheader", name="Dr. Ada Ames")).to_be_visible()
    expect(grid.get_by_role("rowheader", name="Dr. Ben Bryce")).to_be_visible()
    assert desk.csp_errors == []  # type: ignore[attr-defined]
    screenshot(desk, "console-week")
    _no_serious_violations(desk)


def test_the_console_pages_carry_a_strict_content_security_policy(clinic: Clinic) -> None:
    r = web.get(f"{clinic.origin}/console/")
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and r.headers["cache-control"] == "no-cache"
    asset = r.text.split('src="assets/')[1].split('"')[0]
    a = web.get(f"{clinic.origin}/console/assets/{asset}")
    assert a.status_code == 200 and "immutable" in a.headers["cache-control"]
    assert web.get(f"{clinic.origin}/console/assets/..%2Fconfig.json").status_code == 404


# --------------------------------------------------------------------------- the desk's work


def test_the_desk_finds_free_time_and_books_it(desk: Page, clinic: Clinic) -> None:
    family = f"Finder{uid()}"
    patient = clinic.patient(family)
    desk.get_by_role("button", name="Find & book").click()
    desk.get_by_label("Visit type").select_option(label=f"checkup-{clinic.tag} (General clinic)")
    desk.get_by_label("Patient").fill(family[:8])
    desk.get_by_role("button", name=f"Choose Pat {family}").click()
    desk.get_by_role("button", name="Find", exact=True).click()
    first = desk.get_by_role("button", name=re.compile(r"^Book \d")).first
    expect(first).to_be_visible()
    screenshot(desk, "console-find")
    _no_serious_violations(desk)
    first.click()
    expect(desk.locator("fs-find").get_by_role("status")).to_contain_text("Booked.")
    booked = clinic.get("Appointment", patient=patient, status="booked")
    assert booked.get("total", len(booked.get("entry", []))) == 1


def test_dragging_an_appointment_reschedules_it_with_one_book(desk: Page, clinic: Clinic
                                                              ) -> None:
    family = f"Mover{uid()}"
    patient = clinic.patient(family)
    old = clinic.booking(clinic.doctors[0], patient, _day(2, 10))
    desk.set_viewport_size({"width": 1280, "height": 1800})  # the whole day, no scrolling
    _show_day(desk, 2)
    writes: list[Request] = []
    desk.on("request", lambda r: writes.append(r) if r.method != "GET" else None)
    entry = _entry(desk, f"Pat {family}")
    target = desk.locator(f"fs-grid td[data-resource='{clinic.doctors[0]}']"
                          f"[data-start='{_day(2, 14).isoformat().replace('+00:00', '.000Z')}']")
    entry.drag_to(target)
    expect(desk.locator("fs-console .toolbar [role=status]")).to_contain_text("Moved to")
    expect(target.locator("button.entry")).to_contain_text(f"Pat {family}")
    screenshot(desk, "console-day")
    assert [(r.method, r.url.rsplit("/", 1)[-1]) for r in writes] == [("POST", "$book")]
    assert clinic.get(f"Appointment/{old['id']}")["status"] == "cancelled"
    now = clinic.get("Appointment", patient=patient, status="booked")["entry"]
    assert [e["resource"]["start"][11:16] for e in now] == ["14:00"]
    _no_serious_violations(desk)


def test_a_refused_move_is_explained_in_words(desk: Page, clinic: Clinic) -> None:
    family, other = f"Stuck{uid()}", f"Taken{uid()}"
    clinic.booking(clinic.doctors[1], clinic.patient(family), _day(3, 9))
    clinic.booking(clinic.doctors[1], clinic.patient(other), _day(3, 15))
    desk.set_viewport_size({"width": 1280, "height": 1800})
    _show_day(desk, 3)
    target = desk.locator(f"fs-grid td[data-resource='{clinic.doctors[1]}']"
                          f"[data-start='{_day(3, 15).isoformat().replace('+00:00', '.000Z')}']")
    _entry(desk, f"Pat {family}").drag_to(target)
    notice = desk.locator("fs-console .toolbar [role=status]")
    expect(notice).to_contain_text("Not moved:")
    assert len(notice.inner_text()) > len("Not moved: ") + 10  # the guard's reason, in words


def test_the_desk_cancels_a_visit_with_a_reason(desk: Page, clinic: Clinic) -> None:
    family = f"Canceller{uid()}"
    appt = clinic.booking(clinic.doctors[0], clinic.patient(family), _day(6, 17))
    _show_day(desk, 6)
    _entry(desk, f"Pat {family}").click()
    desk.get_by_label("Reason").select_option("pat")
    desk.get_by_label("Note").fill("called in sick")
    screenshot(desk, "console-details")
    _no_serious_violations(desk)
    desk.get_by_role("button", name="Cancel visit").click()
    expect(desk.locator("fs-details").get_by_role("status")).to_contain_text("Cancelled.")
    stored = clinic.get(f"Appointment/{appt['id']}")
    assert stored["status"] == "cancelled"
    assert stored["cancelationReason"]["coding"][0]["code"] == "pat"
    assert stored["cancelationReason"]["text"] == "called in sick"


def test_the_desk_checks_a_patient_in_and_marks_a_no_show(desk: Page, clinic: Clinic) -> None:
    here, away = f"Here{uid()}", f"Away{uid()}"
    arrived = clinic.booking(clinic.doctors[1], clinic.patient(here), _day(6, 18))
    missed = clinic.booking(clinic.doctors[1], clinic.patient(away), _day(6, 18) + timedelta(
        minutes=30))
    _show_day(desk, 6)
    _entry(desk, f"Pat {here}").click()
    desk.get_by_role("button", name="Check in").click()
    expect(desk.locator("fs-details").get_by_role("status")).to_contain_text("Checked in.")
    _entry(desk, f"Pat {away}").click()
    desk.get_by_role("button", name="No-show").click()
    expect(desk.locator("fs-details").get_by_role("status")).to_contain_text("Marked no-show.")
    assert clinic.get(f"Appointment/{arrived['id']}")["status"] == "checked-in"
    assert clinic.get(f"Appointment/{missed['id']}")["status"] == "noshow"


def test_blocked_time_entered_at_the_desk_is_refused_to_bookings(desk: Page, clinic: Clinic
                                                                 ) -> None:
    day = _day(4, 12)
    form = desk.locator("form.block")
    form.get_by_label("Calendar").select_option(label="Dr. Ben Bryce")
    form.get_by_label("Day").fill(day.date().isoformat())
    form.get_by_label("From").fill("12:00")
    form.get_by_label("To").fill("13:00")
    form.get_by_label("Why").fill("staff meeting")
    form.get_by_role("button", name="Block").click()
    expect(desk.locator("fs-console .toolbar [role=status]")).to_contain_text(
        "Blocked Dr. Ben Bryce")
    r = web.post(f"{clinic.server.base}/Appointment", headers=clinic.headers, json={
        "resourceType": "Appointment", "status": "booked", "start": _iso(day),
        "end": _iso(day + timedelta(minutes=30)),
        "participant": [{"actor": {"reference": clinic.doctors[1]}, "status": "accepted"}]})
    assert r.status_code in (409, 422), r.text


def test_the_waitlist_board_shows_a_live_offer_the_desk_books(desk: Page, clinic: Clinic
                                                              ) -> None:
    waiting, leaving = f"Waiting{uid()}", f"Leaving{uid()}"
    who = clinic.patient(waiting)
    gone = clinic.booking(clinic.doctors[0], clinic.patient(leaving), _day(5, 9))
    clinic.post({"resourceType": "Appointment", "status": "waitlist",
                 "created": "2026-01-01T00:00:00Z",
                 "appointmentType": {"coding": [{"system": SYSTEM,
                                                 "code": f"checkup-{clinic.tag}"}]},
                 "participant": [{"actor": {"reference": who}, "status": "needs-action"}],
                 "requestedPeriod": [{"start": _iso(_day(5, 0)), "end": _iso(_day(6, 0))}]})
    desk.get_by_role("button", name="Waitlist").click()
    expect(desk.get_by_role("cell", name=f"Pat {waiting}", exact=True)).to_be_visible()
    current = clinic.get(f"Appointment/{gone['id']}")
    r = web.put(f"{clinic.server.base}/Appointment/{gone['id']}", headers=clinic.headers,
                json={**current, "status": "cancelled"})
    assert r.status_code == 200, r.text
    offer = desk.get_by_role("button", name=f"Book offer for Pat {waiting}")
    expect(offer).to_be_visible(timeout=20000)  # the server's offer, seen live
    screenshot(desk, "console-waitlist")
    _no_serious_violations(desk)
    offer.click()
    expect(desk.locator("fs-waitlist").get_by_role("status")).to_contain_text(
        f"Booked Pat {waiting}.")
    booked = clinic.get("Appointment", patient=who, status="booked")["entry"]
    assert len(booked) == 1
    assert datetime.fromisoformat(booked[0]["resource"]["start"]) == _day(5, 9)


def test_a_second_desk_sees_a_change_live(desk: Page, browser: Browser, clinic: Clinic) -> None:
    other = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    try:
        second = sign_in(other, clinic)
        _show_day(second, 7)
        second.wait_for_selector("body[data-live=live]", timeout=15000)
        family = f"Live{uid()}"
        clinic.booking(clinic.doctors[1], clinic.patient(family), _day(7, 8))
        expect(_entry(second, f"Pat {family}")).to_be_visible(timeout=15000)
        # it came by the websocket Subscription, not by reading the history
        assert second.evaluate("window.fsNotifications || 0") >= 1
    finally:
        other.close()


def test_the_console_deletes_its_live_subscriptions_when_it_closes(browser: Browser,
                                                                   clinic: Clinic) -> None:
    before = {e["resource"]["id"] for e in clinic.get("Subscription", _count=1000).get(
        "entry", [])}
    context = browser.new_context()
    page = sign_in(context, clinic)
    page.wait_for_selector("body[data-live=live]", timeout=15000)
    during = {e["resource"]["id"] for e in clinic.get("Subscription", _count=1000).get(
        "entry", [])}
    mine = during - before
    assert len(mine) == 5
    assert all(clinic.get(f"Subscription/{i}")["channel"]["type"] == "websocket" for i in mine)
    page.close(run_before_unload=True)
    context.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = {e["resource"]["id"] for e in clinic.get("Subscription", _count=1000).get(
            "entry", [])} & mine
        if not left:
            break
        time.sleep(0.2)
    assert not left


def test_the_calendar_works_from_the_keyboard(desk: Page, clinic: Clinic) -> None:
    family = f"Keys{uid()}"
    clinic.booking(clinic.doctors[0], clinic.patient(family), _day(7, 7))
    _show_day(desk, 7)
    entry = _entry(desk, f"Pat {family}")
    entry.focus()
    desk.keyboard.press("Enter")
    expect(desk.locator("fs-details").get_by_role("button", name="Check in")).to_be_visible()


def test_the_console_reads_on_a_tablet(browser: Browser, clinic: Clinic) -> None:
    context = browser.new_context(viewport={"width": 768, "height": 1024}, timezone_id="UTC",
                                  has_touch=True)
    try:
        page = sign_in(context, clinic)
        expect(page.locator("fs-grid").get_by_role("rowheader", name="Dr. Ada Ames")
               ).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate(WIDER_THAN_SCREEN)
        assert width <= 768, f"the page is {width}px wide on a 768px screen: {wide}"
        screenshot(page, "console-tablet")
        _no_serious_violations(page)
    finally:
        context.close()


def test_an_ehr_launch_opens_the_console_on_the_ehrs_patient_and_calendar(
        browser: Browser, clinic: Clinic) -> None:
    family = f"Launched{uid()}"
    patient = clinic.patient(family)
    created = web.post(f"{clinic.origin}/auth/launch", headers=clinic.headers, json={
        "patient": patient, "fhirContext": [{"reference": clinic.doctors[1]}]})
    assert created.status_code == 201, created.text
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    try:
        page = context.new_page()
        page.goto(f"{clinic.origin}/console/launch.html?iss={clinic.server.base}"
                  f"&launch={created.json()['launch']}")
        fill_login(page, "desk", PASSWORD)
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        expect(page.locator("header")).to_contain_text(f"Patient: Pat {family}")
        grid = page.locator("fs-grid")
        expect(grid.get_by_role("rowheader", name="Dr. Ben Bryce")).to_be_visible()
        expect(grid.get_by_role("rowheader", name="Dr. Ada Ames")).to_have_count(0)
        page.get_by_role("button", name="Find & book").click()
        expect(page.locator("fs-find")).to_contain_text(f"Patient: Pat {family}")
    finally:
        context.close()


def test_the_kpi_screen_charts_a_measure_by_practitioner_with_a_csv(desk: Page, clinic: Clinic
                                                                    ) -> None:
    clinic.booking(clinic.doctors[0], clinic.patient(f"Kpi{uid()}"), _day(8, 9))
    desk.get_by_role("button", name="KPIs").click()
    kpis = desk.locator("fs-kpis")
    kpis.get_by_label("Measure").select_option(label="Fill rate")
    kpis.get_by_label("By").select_option("practitioner")
    kpis.get_by_label("From", exact=True).fill(_day(1, 0).date().isoformat())
    kpis.get_by_label("To", exact=True).fill(_day(13, 0).date().isoformat())
    kpis.get_by_role("button", name="Show").click()
    row = kpis.get_by_role("row").filter(has_text="Dr. Ada Ames")
    expect(row).to_be_visible()
    assert float(row.get_by_role("cell").nth(1).inner_text()) > 0  # Ada has bookings
    expect(kpis.get_by_role("img", name="Fill rate by practitioner")).to_be_visible()
    screenshot(desk, "console-kpis")
    _no_serious_violations(desk)
    with desk.expect_download() as download:
        kpis.get_by_role("link", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0] == '"stratum","score","denominator"'
    assert "Dr. Ada Ames" in text


def test_a_hold_from_the_find_screen_says_until_when(desk: Page, clinic: Clinic) -> None:
    desk.get_by_role("button", name="Find & book").click()
    desk.get_by_label("Visit type").select_option(label=f"checkup-{clinic.tag} (General clinic)")
    desk.get_by_role("button", name="Find", exact=True).click()
    desk.get_by_role("button", name=re.compile(r"^Hold \d")).first.click()
    expect(desk.locator("fs-find").get_by_role("status")).to_contain_text("Held until")
    held = clinic.get("Appointment", status="pending")
    assert any(e["resource"]["status"] == "pending" for e in held.get("entry", []))
