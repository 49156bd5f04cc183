"""The console and widget files the server serves (``fhir_sched/static/``) are exactly what
``console/``'s sources build to with its lock file: the committed build is reproducible, so
what runs is what the sources say. Needs Node and npm (the machine's); installs the locked
packages with ``npm ci``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "console"
STATIC = ROOT / "fhir_sched" / "static"


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_committed_console_build_is_what_the_sources_build_to(tmp_path: Path) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "node and npm are needed to build the console"
    if not (CONSOLE / "node_modules" / "esbuild").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CONSOLE,
                       check=True, timeout=900)
    subprocess.run([node, "build.mjs", str(tmp_path)], cwd=CONSOLE, check=True, timeout=300,
                   capture_output=True)
    built = _digests(tmp_path)
    assert built, "the build wrote nothing"
    assert built == _digests(STATIC), "fhir_sched/static is stale: run `npm run build` in console/"
