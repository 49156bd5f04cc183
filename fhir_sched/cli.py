"""``fhir-sched``: the command line. ``serve`` runs the HTTP server; ``demo`` loads sample data."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env(host=args.host, port=args.port, store=args.store,
                                 public_base=args.public_base)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.demo:
        from .demo import load_demo

        created = asyncio.run(load_demo(settings))
        logging.getLogger("fhir_sched").info("demo data: %d resources created", created)
    from .app import create_app

    app = create_app(settings)
    print(f"fhir-sched serving FHIR R4 at http://{settings.host}:{settings.port}"
          f"{settings.base_path} (store {settings.store})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=args.access_log, workers=1)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import load_demo

    settings = Settings.from_env(store=args.store)
    created = asyncio.run(load_demo(settings))
    print(f"demo data loaded into {settings.store}: {created} resources created")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-sched", description="FHIR R4 scheduling server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--store", default=None,
                       help="sqlite:///path.db (default ./fhir-sched.db) or mongodb://host/db")
    serve.add_argument("--public-base", default=None,
                       help="public FHIR base URL used in links (default: from the request)")
    serve.add_argument("--demo", action="store_true",
                       help="load the demo clinic before serving (idempotent)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(fn=_serve)
    demo = sub.add_parser("demo", help="load the demo clinic into a store (idempotent)")
    demo.add_argument("--store", default=None)
    demo.set_defaults(fn=_demo)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
