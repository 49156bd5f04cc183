"""A real browser app: the npm ``fhirclient`` library (SMART's own JavaScript client) completes a
standalone launch with PKCE in headless Debian Chromium, driven by playwright-core, against the
embedded authorization server, and reads the patient's appointments across origins (CORS).

What the run needs it installs: Debian's ``chromium`` (apt) when /usr/bin/chromium is missing,
and the Node packages from ``tests/peers/smart-browser``'s lock file. A failed install fails
the test; it never skips.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import web
from tests.support.browser import CHROMIUM, install_chromium
from tests.support.launch import add_user
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

PEER = Path(__file__).parent / "peers" / "smart-browser"
PASSWORD = "browser password 1"


def _installed() -> Path:
    install_chromium()
    if not (PEER / "node_modules" / "fhirclient").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the browser peer"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER,
                       check=True, timeout=900)
    node = shutil.which("node")
    assert node, "node is needed to drive the browser"
    return Path(node)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """The test app's own web server: another origin than the FHIR server."""
    port = free_port()
    handler = functools.partial(_Quiet, directory=str(PEER))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def test_npm_fhirclient_completes_a_standalone_launch_in_chromium(app_origin: str,
                                                                 tmp_path: Path) -> None:
    # the browser flow does not depend on the store (the SMART tests cover both): SQLite
    node = _installed()
    url = store_url("sqlite", None, "fhir_sched_browser")
    admin = BackendClient.new("browser-admin", "ES384")
    register_backend(url, admin, "system/*.cruds", tmp_path)
    assert register(url, "browser-app", "launch/patient openid fhirUser patient/*.rs",
                    "--redirect-uri", f"{app_origin}/app/index.html", "--public"
                    ).returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_CORS_ORIGINS": app_origin}).start()
    try:
        h = {"authorization": f"Bearer {get_token(proc.base, admin, 'system/*.cruds')}"}
        ids = []
        for family in ("Browser", "Other"):
            r = web.post(f"{proc.base}/Patient", headers=h,
                         json={"resourceType": "Patient", "name": [{"family": family}]})
            ids.append(r.json()["id"])
        mine, theirs = (web.post(f"{proc.base}/Appointment", headers=h, json={
            "resourceType": "Appointment", "status": "proposed",
            "requestedPeriod": [{"start": "2035-01-01T09:00:00Z",
                                 "end": "2035-01-01T10:00:00Z"}],
            "participant": [{"actor": {"reference": f"Patient/{pid}"},
                             "status": "needs-action"}]}).json()["id"] for pid in ids)
        add_user(url, "browser-user", PASSWORD, f"Patient/{ids[0]}")
        launch = f"{app_origin}/app/launch.html?client=browser-app&iss={proc.base}"
        done = subprocess.run([str(node), "drive.mjs", launch, "browser-user", PASSWORD],
                              cwd=PEER, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "CHROMIUM": str(CHROMIUM)})
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert "error" not in result, result
        assert result["patient"] == ids[0]
        assert result["family"] == "Browser"
        assert result["appointments"] == [mine]
        assert theirs not in result["all"]
        assert "patient/Appointment.rs" in result["scope"].split()
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])
