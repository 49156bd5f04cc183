"""The README's one step: ``fhir-sched serve --demo`` serves the demo clinic with auth on and
hands the newcomer a token that works, printed and kept in ./fhir-sched-demo.token, and a
front-desk sign-in for the console that works in a real browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.support import web
from tests.support.browser import fill_login, launch
from tests.support.server import free_port


def test_the_demo_prints_a_token_that_reads_the_demo_clinic(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FHIR_SCHED_AUTH"}  # the default: smart
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fhir_sched.cli", "serve", "--demo",
                                 "--port", str(port), "--store",
                                 f"sqlite:///{tmp_path}/demo.db"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if web.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        token = (tmp_path / "fhir-sched-demo.token").read_text().strip()
        assert token in log.read_text()
        assert oct((tmp_path / "fhir-sched-demo.token").stat().st_mode & 0o777) == "0o600"
        assert web.get(f"{base}/Slot").status_code == 401
        slots = web.get(f"{base}/Slot", params={"status": "free", "_count": 5},
                        headers={"authorization": f"Bearer {token}"})
        assert slots.status_code == 200
        assert len(slots.json()["entry"]) == 5
        # the demo clinic publishes its slots, openly and with nothing the profiles lack
        manifest = web.get(f"{base}/$bulk-publish")
        assert manifest.status_code == 200
        assert manifest.json()["error"] == []
        slot_file = next(o["url"] for o in manifest.json()["output"] if o["type"] == "Slot")
        assert b'"status":"free"' in web.get(slot_file).content
        # and the console, signed into with the credentials the demo printed
        user, password = (tmp_path / "fhir-sched-demo.console").read_text().split()
        assert password in log.read_text()
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/console/")
            fill_login(page, user, password)
            page.wait_for_selector("body[data-ready=true]", timeout=30000)
            expect(page.locator("fs-grid").get_by_role("rowheader", name="Dr. Grace Lee")
                   ).to_be_visible()
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
