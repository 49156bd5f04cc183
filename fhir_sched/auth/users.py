"""Local users of the embedded authorization server: who logs in at the authorize step.

A user is a username, an Argon2id password hash (memory-hard, so a stolen store does not give
the passwords away cheaply) and the FHIR resource the user is (``fhirUser``: a Patient,
Practitioner, RelatedPerson...). Logins are rate limited per user: after ``MAX_FAILURES``
failed attempts the account is locked for ``LOCK_SECONDS``, whatever the password; a lock that
has passed resets the count. Unknown usernames cost the same hash as known ones, so timing does
not tell which exist.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..timeutil import now_instant
from .registry import Registry

USER = "auth/user/"
FAILURES = "auth/failures/"
MAX_FAILURES = 5
LOCK_SECONDS = 900
FHIR_USER = re.compile(r"^(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)/"
                       r"[A-Za-z0-9\-.]{1,64}$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+\-]{1,128}$")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a real password")


@dataclass(frozen=True, slots=True)
class User:
    username: str
    fhir_user: str

    @property
    def patient(self) -> str | None:
        return self.fhir_user if self.fhir_user.startswith("Patient/") else None


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


class UserError(ValueError):
    pass


class Users:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def add(self, username: str, password: str, fhir_user: str) -> None:
        if not USERNAME.match(username):
            raise UserError(f"username {username!r}: letters, digits and ._@+- only")
        if not FHIR_USER.match(fhir_user):
            raise UserError(f"--fhir-user {fhir_user!r} must be Patient/<id>, "
                            "Practitioner/<id>, PractitionerRole/<id> or RelatedPerson/<id>")
        if len(password) < 8:
            raise UserError("the password must have at least 8 characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        doc = {"username": username, "fhir_user": fhir_user, "hash": hashed,
               "created": now_instant()}
        if not await self.registry.add_doc(USER + username, doc):
            raise UserError(f"user {username!r} exists already")

    async def remove(self, username: str) -> bool:
        return await self.registry.delete_doc(USER + username)

    async def login(self, username: str, password: str) -> User | None:
        """The user, when the password is right and the account is not locked."""
        now = time.time()
        failures = await self.registry.get_doc(FAILURES + username) if USERNAME.match(
            username) else None
        if failures and failures.get("locked_until", 0) > now:
            return None
        doc = await self.registry.get_doc(USER + username) if USERNAME.match(username) else None
        # Argon2 takes tens of milliseconds of CPU by design: off the event loop
        ok = await asyncio.to_thread(_verify, doc["hash"] if doc else _DUMMY, password)
        ok = ok and doc is not None
        if ok and doc is not None:
            if failures:
                await self.registry.delete_doc(FAILURES + username)
            return User(username, str(doc["fhir_user"]))
        if doc is not None:
            count = int((failures or {}).get("count", 0)) + 1
            if failures and failures.get("locked_until", 0) and failures["locked_until"] <= now:
                count = 1  # an expired lock starts the count again
            record: dict[str, float | int] = {"count": count}
            if count >= MAX_FAILURES:
                record["locked_until"] = now + LOCK_SECONDS
            await self.registry.put_doc(FAILURES + username, record)
        return None
