"""A payer's eligibility gateway as a separate process, for the eligibility tests: it takes a
CoverageEligibilityRequest POSTed as the body and answers by the asked Coverage's id prefix.

- ``good-``: in force, answered as a bare CoverageEligibilityResponse whose insurance names
  the Coverage as an absolute URL (a payer echoing what it was sent, its own way);
- ``wrapped-``: in force, inside a Parameters ``return``;
- ``lapsed-``: not in force ("policy terminated");
- ``error-``: outcome error, "Subscriber not found";
- ``slow-``: in force, after ``--slow-seconds``;
- ``fail-``: HTTP 503 with an OperationOutcome;
- ``garbage-``: HTTP 200 with an HTML page.

Every request is appended to ``--out`` (one JSON line: the body and the Authorization header).

    python -m tests.support.eligibility_checker --port P --out FILE [--slow-seconds S]
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer(request: dict[str, Any], inforce: bool, disposition: str) -> dict[str, Any]:
    coverage = request["insurance"][0]["coverage"]["reference"]
    return {"resourceType": "CoverageEligibilityResponse", "id": "payer-side-id",
            "identifier": [{"system": "https://payer.example/eligibility", "value": "E-1"}],
            "status": "active", "purpose": ["validation"], "patient": request["patient"],
            "created": "2026-01-01T00:00:00Z", "request": {"reference": "payer/ref"},
            "outcome": "complete", "disposition": disposition,
            "insurer": {"reference": "Organization/payer-own-id"},
            "insurance": [{"coverage": {"reference": f"https://ehr.example/fhir/{coverage}"},
                           "inforce": inforce}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, kind: str = "application/fhir+json") -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = json.loads(raw)
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps({"body": request, "content_type":
                                      self.headers.get("content-type"), "authorization":
                                      self.headers.get("authorization")}) + "\n")
            cid = request["insurance"][0]["coverage"]["reference"].split("/", 1)[1]
            kind = cid.split("-", 1)[0]
            if kind == "slow":
                time.sleep(args.slow_seconds)
            if kind in ("good", "slow"):
                body: Any = answer(request, True, "Coverage active")
            elif kind == "wrapped":
                body = {"resourceType": "Parameters", "parameter": [
                    {"name": "return", "resource": answer(request, True, "Coverage active")}]}
            elif kind == "lapsed":
                body = answer(request, False, "policy terminated 2026-01-01")
            elif kind == "error":
                body = {**answer(request, True, ""), "outcome": "error", "insurance": [],
                        "error": [{"code": {"coding": [{
                            "system": "http://terminology.hl7.org/CodeSystem/adjudication-error",
                            "code": "a002", "display": "Subscriber not found"}]}}]}
                del body["disposition"]
            elif kind == "fail":
                self._send(503, json.dumps({"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "transient",
                    "diagnostics": "payer system down for maintenance"}]}).encode())
                return
            else:
                self._send(200, b"<html><body>Login</body></html>", "text/html")
                return
            self._send(200, json.dumps(body).encode())

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
