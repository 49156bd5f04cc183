"""A CDS Hooks service as a separate process, for the CDS tests: it answers the
``appointment-book`` hook by the prefix of ``context.patientId``:

- ``quiet-``: no cards; ``info-``: an info card; ``warn-``: a warning card;
- ``crit-``: a critical card; ``slow-``: no cards, after ``--slow-seconds``.

Every call is appended to ``--out`` (one JSON line: the request body).

    python -m tests.support.cds_service --port P --out FILE [--slow-seconds S]
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CARDS = {
    "info": {"summary": "Copay is $20", "indicator": "info",
             "source": {"label": "Acme Payer CRD"}},
    "warn": {"summary": "Prior authorization expires in 3 days", "indicator": "warning",
             "detail": "Renew it before the next visit.", "source": {"label": "Acme Payer CRD"}},
    "crit": {"summary": "Service not covered under this plan", "indicator": "critical",
             "source": {"label": "Acme Payer CRD"}},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(request) + "\n")
            kind = str(request.get("context", {}).get("patientId", "")).split("-", 1)[0]
            if kind == "slow":
                time.sleep(args.slow_seconds)
            body = json.dumps({"cards": [CARDS[kind]] if kind in CARDS else []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
