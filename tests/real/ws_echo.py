"""A WebSocket echo server with the real `websockets` library, as an app behind a sidecar.

Listens on 127.0.0.1 (port from argv[1], 0 for any; the address from argv[2] if given),
prints `READY <port>` once listening, then one JSON line per opening handshake it accepted
(`{"path": ..., "headers": {...}}`), and echoes every message back on the connection it came on.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    request = ws.request
    print(
        json.dumps(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.raw_items()},
            }
        ),
        flush=True,
    )
    async for message in ws:
        await ws.send(message)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    # No pings from the server side: an idle tunnel stays idle unless the client speaks.
    async with serve(echo, host, port, ping_interval=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"READY {bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
