"""Headless Debian Chromium driven by Playwright (Python), for the console and widget tests.

What the run needs it installs: Debian's ``chromium`` (apt) when /usr/bin/chromium is missing,
and Deque's axe-core from ``tests/peers/axe``'s lock file. A failed install fails the test; it
never skips. Screenshots of every screen go to ``test-artifacts/`` (or
``$FHIR_SCHED_ARTIFACTS``), kept after the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
AXE = ROOT / "tests" / "peers" / "axe"
ARTIFACTS = Path(os.environ.get("FHIR_SCHED_ARTIFACTS", ROOT / "test-artifacts"))
# As the machine notes say: without the background-networking flags Chromium keeps trying to
# reach Google's hosts, which this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def install_chromium() -> None:
    """Debian's Chromium, from apt when it is missing (a failed install fails the test)."""
    if not CHROMIUM.exists():
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y",
                                            "--no-install-recommends", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
    assert CHROMIUM.exists(), f"{CHROMIUM} is needed for the browser tests"


def install() -> None:
    install_chromium()
    if not (AXE / "node_modules" / "axe-core" / "axe.min.js").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install axe-core"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AXE,
                       check=True, timeout=900)


def launch(playwright: Any) -> Browser:
    install()
    browser: Browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    return browser


def fill_login(page: Page, username: str, password: str) -> None:
    """The embedded authorization server's login and consent pages, as a user fills them."""
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.click("button[value=allow]")


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.x A/AA violations of impact serious or critical on the page as it is
    now (shadow roots included). Evaluated through the DevTools protocol, which the page's
    Content-Security-Policy does not govern, so the page keeps its strict policy."""
    source = (AXE / "node_modules" / "axe-core" / "axe.min.js").read_text()
    page.evaluate(source + "\n;0")
    result: dict[str, Any] = page.evaluate(
        """async () => await axe.run(document, {runOnly: {type: "tag", values:
           ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})""")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
