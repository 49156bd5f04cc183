"""The event loop gets the interpreter back quickly from threads that compute.

Large bodies are validated in worker threads so the loop stays free, but the loop then has to
win the interpreter back after every socket call; how long a computing thread may keep it is
``FHIR_SCHED_THREAD_SWITCH_US`` (``bench/stall_bench.py`` measures the loop lag it buys).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_sched.app import create_app
from fhir_sched.settings import Settings


@pytest.fixture
def restore_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield None
    sys.setswitchinterval(before)


async def test_a_started_server_takes_the_interpreter_back_at_the_configured_interval(
        tmp_path: Path, restore_switch_interval: None) -> None:
    sys.setswitchinterval(0.005)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 's.db'}", auth="none",
                              thread_switch_us=700))
    async with app.router.lifespan_context(app):
        assert sys.getswitchinterval() == pytest.approx(0.0007)


async def test_the_default_is_one_millisecond_and_zero_leaves_python_alone(
        tmp_path: Path, restore_switch_interval: None) -> None:
    assert Settings().thread_switch_us == 1000
    sys.setswitchinterval(0.004)
    app = create_app(Settings(store=f"sqlite:///{tmp_path / 's.db'}", auth="none",
                              thread_switch_us=0))
    async with app.router.lifespan_context(app):
        assert sys.getswitchinterval() == pytest.approx(0.004)


def test_the_interval_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SCHED_THREAD_SWITCH_US", "250")
    assert Settings.from_env().thread_switch_us == 250
