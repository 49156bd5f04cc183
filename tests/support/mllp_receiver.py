"""A separate MLLP receiver process built on python-hl7's asyncio server (code nobody here
wrote), for outbound tests: it appends every message it receives to a file (one JSON line:
MSH-10, trigger, the message) and answers AA, or AE for the first ``--fail`` messages.

    python -m tests.support.mllp_receiver --port P --out FILE [--fail K]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import hl7
import hl7.mllp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail", type=int, default=0)
    args = parser.parse_args()
    seen = 0

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        nonlocal seen
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                seen += 1
                code = "AE" if seen <= args.fail else "AA"
                msh = message.segment("MSH")
                with open(args.out, "a", encoding="utf-8") as out:
                    out.write(json.dumps({"control_id": str(msh[10]), "event": str(msh[9][0][1]),
                                          "code": code, "message": str(message)}) + "\n")
                writer.writemessage(message.create_ack(code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def serve() -> None:
        async with await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=args.port) as s:
            print("ready", flush=True)
            await s.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
