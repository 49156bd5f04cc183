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
                                 public_base=args.public_base, mllp_port=args.mllp_port,
                                 mllp_tls_cert=args.mllp_tls_cert,
                                 mllp_tls_key=args.mllp_tls_key, hl7v2_config=args.hl7v2_config)
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
    if settings.mllp_port:
        print(f"fhir-sched receiving HL7 v2 over MLLP{'/TLS' if settings.mllp_tls_cert else ''}"
              f" at {settings.host}:{settings.mllp_port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=args.access_log, workers=1)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import load_demo

    settings = Settings.from_env(store=args.store)
    created = asyncio.run(load_demo(settings))
    print(f"demo data loaded into {settings.store}: {created} resources created")
    return 0


def _hl7v2_send(args: argparse.Namespace) -> int:
    from .hl7v2.send import send_file

    try:
        return asyncio.run(send_file(args.file, args.to, timeout=args.timeout, tls=args.tls,
                                     ca_file=args.tls_ca))
    except ValueError as exc:  # a bad --to address
        print(str(exc), file=sys.stderr)
        return 2


def _hl7v2_dead_letters(args: argparse.Namespace) -> int:
    from .compose import build
    from .hl7v2 import inbox, outbox

    settings = Settings.from_env(store=args.store, hl7v2_config=args.hl7v2_config)

    async def run() -> int:
        core = build(settings)
        await core.start()
        try:
            if args.replay:
                replayed = await inbox.replay_dead_letters(core.hl7v2, args.limit)
                for r in replayed:
                    print(f"inbound  {r.entry.received}  {r.entry.sender:<24} "
                          f"{r.entry.control_id:<20} {r.entry.event:<8} {r.entry.ack_code} -> "
                          f"{r.code or 'raw purged'}")
                left = len(await inbox.dead_letters(core.store, args.limit))
                queued = await outbox.replay_outbound(core.services, args.limit)
                for o in queued:
                    print(f"outbound {o.created}  Endpoint/{o.endpoint:<15} {o.id:<30} "
                          f"{o.event:<4} queued again (was: {o.error})")
                print(f"{len(replayed)} inbound replayed, {left} still refused; "
                      f"{len(queued)} outbound queued again (a running server delivers them)")
                return 0 if left == 0 else 1
            letters = await inbox.dead_letters(core.store, args.limit)
            for e in letters:
                print(f"inbound  {e.received}  {e.sender:<24} {e.control_id:<20} {e.event:<8} "
                      f"{e.ack_code}  {e.error}")
            dead = await outbox.outbound_dead_letters(core.services, args.limit)
            for o in dead:
                print(f"outbound {o.created}  Endpoint/{o.endpoint:<15} {o.id:<30} {o.event:<4} "
                      f"{o.attempts} attempts  {o.error}")
            print(f"{len(letters)} refused inbound message(s), {len(dead)} undelivered outbound"
                  " message(s)")
            return 0
        finally:
            await core.close()

    return asyncio.run(run())


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
    serve.add_argument("--mllp-port", type=int, default=None,
                       help="also receive HL7 v2 over MLLP on this port (default: off)")
    serve.add_argument("--mllp-tls-cert", default=None,
                       help="PEM certificate (chain) for MLLP over TLS")
    serve.add_argument("--mllp-tls-key", default=None,
                       help="PEM private key for --mllp-tls-cert (if not in the same file)")
    serve.add_argument("--hl7v2-config", default=None,
                       help="TOML file of per-sender HL7 v2 settings (zones, namespaces, ...)")
    serve.set_defaults(fn=_serve)
    demo = sub.add_parser("demo", help="load the demo clinic into a store (idempotent)")
    demo.add_argument("--store", default=None)
    demo.set_defaults(fn=_demo)
    hl7v2 = sub.add_parser("hl7v2", help="HL7 v2 tools").add_subparsers(
        dest="hl7v2_command", required=True)
    send = hl7v2.add_parser("send", help="send a file of HL7 v2 messages over MLLP, print ACKs")
    send.add_argument("file", help="messages: MLLP-framed, blank-line separated or back to back")
    send.add_argument("--to", required=True, help="host:port or mllp://host:port")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an ACK")
    send.add_argument("--tls", action="store_true", help="connect with TLS")
    send.add_argument("--tls-ca", default=None, help="CA file to verify the peer with")
    send.set_defaults(fn=_hl7v2_send)
    dead = hl7v2.add_parser("dead-letters",
                            help="list refused inbound messages (AE/AR); --replay runs them again")
    dead.add_argument("--store", default=None, help="the store, as for serve")
    dead.add_argument("--hl7v2-config", default=None, help="sender settings, as for serve")
    dead.add_argument("--replay", action="store_true",
                      help="run each again through the bridge; applied ones leave the list")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (newest)")
    dead.set_defaults(fn=_hl7v2_dead_letters)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
