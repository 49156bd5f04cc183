"""The patient booking widget (issue 16, item 2) on a clinic page served from another origin,
in headless Debian Chromium driven by Playwright, against a real server with auth on: the open
times show without any login (the public view), a patient signs in with SMART (PKCE) and the
widget books the chosen time for them; a visit type booked by phone shows the phone number.
axe-core finds no serious or critical violation; screenshots are kept (``test-artifacts/``)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.support import web
from tests.support.browser import fill_login, launch, screenshot, serious_violations
from tests.support.launch import add_user
from tests.support.scheduling import hours, need, template, visit_type
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

PASSWORD = "patient password 1"
SYSTEM = "https://clinic.example/visit-types"
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WIDGET_SCOPE = "openid fhirUser launch/patient patient/Appointment.cru patient/Patient.r"
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="{server}/widget/booking.js" defer></script></head><body><main>
<h1>{title}</h1>
<fhir-sched-booking fhir="{base}" client-id="clinic-site" service="HealthcareService/{service}"
  location="Location/w-loc"></fhir-sched-booking></main></body></html>"""


@dataclass
class Site:
    server: ServerProcess
    origin: str  # the clinic's own web site
    patient: str
    headers: dict[str, str]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    pages = tmp_path_factory.mktemp("clinic-site")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_Quiet, directory=str(pages)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = store_url("sqlite", None, "fhir_sched_widget")
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                     "FHIR_SCHED_CORS_ORIGINS": origin})
    admin = BackendClient.new("widget-admin", "ES384")
    register_backend(url, admin, "system/*.cruds", tmp_path_factory.mktemp("keys"))
    assert register(url, "clinic-site", WIDGET_SCOPE, "--redirect-uri", f"{origin}/book.html",
                    "--public").returncode == 0
    add_user(url, "pat", PASSWORD, "Patient/w-pat")
    server.start()
    try:
        token = get_token(server.base, admin, "system/*.cruds")
        h = {"authorization": f"Bearer {token}", "content-type": "application/fhir+json"}

        def put(body: dict[str, Any]) -> None:
            r = web.put(f"{server.base}/{body['resourceType']}/{body['id']}", headers=h,
                        json=body)
            assert r.status_code in (200, 201), r.text

        put({"resourceType": "Patient", "id": "w-pat", "name": [{"family": "Widget"}]})
        put({"resourceType": "Location", "id": "w-loc", "name": "Main St", "status": "active",
             "telecom": [{"system": "phone", "value": "+1-555-0100"}]})
        put({"resourceType": "Practitioner", "id": "w-doc", "name": [{"family": "Doc"}]})
        put({"resourceType": "Schedule", "id": "w-doc-s", "active": True,
             "actor": [{"reference": "Practitioner/w-doc"}, {"reference": "Location/w-loc"}],
             "extension": [template("UTC", hours(ALL_WEEK, "06:00:00", "22:00:00"))]})
        put({"resourceType": "HealthcareService", "id": "w-online", "name": "Check-ups",
             "location": [{"reference": "Location/w-loc"}],
             "extension": [visit_type(SYSTEM, "checkup", 30, need("Practitioner"))]})
        by_phone = visit_type(SYSTEM, "surgery-consult", 30, need("Practitioner"))
        by_phone["extension"].append({"url": "selfBooking", "valueBoolean": False})
        put({"resourceType": "HealthcareService", "id": "w-phone", "name": "Surgery",
             "location": [{"reference": "Location/w-loc"}],
             "telecom": [{"system": "phone", "value": "+1-555-0199"}], "extension": [by_phone]})
        base = server.base
        server_origin = base.removesuffix("/fhir")
        (pages / "book.html").write_text(PAGE.format(title="Book a check-up", server=server_origin,
                                                     base=base, service="w-online"))
        (pages / "phone.html").write_text(PAGE.format(title="Surgery consultations",
                                                      server=server_origin, base=base,
                                                      service="w-phone"))
        yield Site(server, origin, "Patient/w-pat", h)
    finally:
        httpd.shutdown()
        server.stop()
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def test_the_widget_shows_open_times_without_a_login(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.headers.get("authorization", "")))
        page.goto(f"{site.origin}/book.html")
        widget = page.locator("fhir-sched-booking")
        expect(widget.get_by_role("heading", name="Book checkup · Check-ups")).to_be_visible()
        expect(widget.get_by_role("button").first).to_be_visible()
        assert not any(sent), "the open times were read with a token"
        screenshot(page, "widget-times")
        assert serious_violations(page) == []
    finally:
        context.close()


def test_a_signed_in_patient_books_from_another_origin(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.origin}/book.html")
        widget = page.locator("fhir-sched-booking")
        times = widget.locator("ul button")
        expect(times.first).to_be_visible()
        times.nth(2).click()
        widget.get_by_role("button", name="Sign in to book").click()
        fill_login(page, "pat", PASSWORD)
        done = widget.get_by_role("status")
        expect(done).to_contain_text("Booked for", timeout=30000)
        assert page.url.startswith(f"{site.origin}/book.html")
        screenshot(page, "widget-booked")
        assert serious_violations(page) == []
        r = web.get(f"{site.server.base}/Appointment", headers=site.headers,
                    params={"patient": site.patient, "status": "booked"})
        booked = [e["resource"] for e in r.json().get("entry", [])]
        assert len(booked) == 1
        assert {"reference": "Practitioner/w-doc"} in [p["actor"] for p in booked[0]
                                                       ["participant"]]
    finally:
        context.close()


def test_a_visit_booked_by_phone_shows_the_number(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.origin}/phone.html")
        widget = page.locator("fhir-sched-booking")
        expect(widget.get_by_role("status")).to_contain_text("booked by phone")
        expect(widget.get_by_role("link", name="+1-555-0199")).to_have_attribute(
            "href", "tel:+1-555-0199")
        assert widget.locator("ul button").count() == 0
        screenshot(page, "widget-phone")
        assert serious_violations(page) == []
    finally:
        context.close()


def test_the_widget_script_is_served_for_other_sites(site: Site) -> None:
    r = web.get(f"{site.server.base.removesuffix('/fhir')}/widget/booking.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert r.headers["access-control-allow-origin"] == "*"
    assert "max-age=300" in r.headers["cache-control"] and r.headers["etag"]
    assert "fhir-sched-booking" in r.text
