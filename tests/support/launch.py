"""Driving the authorize step as a browser would: GET the authorize URL, post the login form,
post the consent form, read the code off the redirect. Plain HTTP over a real socket, with the
browser's cookie jar, so the flow binding (the flow cookie) is exercised too."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

from tests.support import web

REDIRECT = "http://127.0.0.1:9/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).rstrip(b"=").decode()
    return verifier, challenge


def add_user(store: str, username: str, password: str, fhir_user: str) -> None:
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "user", "add", "--username",
                           username, "--password-stdin", "--fhir-user", fhir_user, "--store",
                           store], input=password + "\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def pending_of(html: str) -> str:
    m = re.search(r'name=pending value="([^"]+)"', html)
    assert m, html
    return m[1]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


@dataclass
class Browser:
    """One user agent: its cookies, and the steps of one launch."""

    issuer: str
    aud: str
    http: httpx.Client = field(default_factory=lambda: web.client(follow_redirects=False))

    def authorize(self, client_id: str, scope: str, challenge: str | None, *,
                  state: str = "st-1", method: str | None = "S256", aud: str | None = None,
                  redirect: str = REDIRECT, **extra: str) -> httpx.Response:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                  "scope": scope, "state": state, "aud": aud or self.aud, **extra}
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        return self.http.get(f"{self.issuer}/auth/authorize?{urlencode(params)}")

    def login(self, page: httpx.Response, username: str, password: str) -> httpx.Response:
        return self.http.post(f"{self.issuer}/auth/login", data={
            "pending": pending_of(page.text), "username": username, "password": password})

    def consent(self, page: httpx.Response, decision: str = "allow",
                scopes: list[str] | None = None, patient: str | None = None) -> httpx.Response:
        pending = pending_of(page.text)
        offered = re.findall(r'name=scope value="([^"]+)"', page.text)
        form: list[tuple[str, str]] = [("pending", pending), ("decision", decision)]
        form += [("scope", s) for s in (offered if scopes is None else scopes)]
        if patient is not None:
            form.append(("patient", patient))
        return self.http.post(f"{self.issuer}/auth/consent", content=urlencode(form),
                              headers={"content-type": "application/x-www-form-urlencoded"})

    def code(self, client_id: str, scope: str, challenge: str, username: str, password: str,
             **extra: str) -> str:
        patient = extra.pop("patient", None)
        page = self.authorize(client_id, scope, challenge, **extra)
        assert page.status_code == 200, page.text
        consent = self.login(page, username, password)
        assert consent.status_code == 200, consent.text
        done = self.consent(consent, patient=patient)
        assert done.status_code == 303, done.text
        q = query_of(done.headers["location"])
        assert q.get("state") == extra.get("state", "st-1")
        assert "code" in q, q
        return q["code"]

    def exchange(self, client_id: str, code: str, verifier: str | None,
                 redirect: str = REDIRECT, auth: tuple[str, str] | None = None
                 ) -> httpx.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                "client_id": client_id}
        if verifier is not None:
            form["code_verifier"] = verifier
        return web.post(f"{self.issuer}/auth/token", data=form, auth=auth)
