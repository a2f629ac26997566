"""A WebSocket client with the real `websockets` library, as an app calling through its sidecar.

    ws_client.py HOST:PORT URI [--idle SECONDS] [--expect-close]

Connects to HOST:PORT (the outbound sidecar) and opens URI (its host is what Host names), then:
sends a text and a binary message and reads their echoes, prints `{"open": true}`, stays silent
for --idle seconds (no pings), and then either sends one more text message and reads its echo,
or with --expect-close checks that the connection was closed meanwhile. Prints one JSON line
with the outcome last: `{"echoes": [...]}`, `{"closed": true, "code": ...}`, or
`{"error": NAME, "status": N}` when the opening handshake failed.
"""

import argparse
import asyncio
import json
import socket

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def say(obj):
    print(json.dumps(obj), flush=True)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("uri")
    p.add_argument("--idle", type=float, default=0.0)
    p.add_argument("--expect-close", action="store_true")
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    try:
        ws = await connect(a.uri, sock=sock, ping_interval=None, open_timeout=20)
    except InvalidStatus as e:
        say({"error": "InvalidStatus", "status": e.response.status_code})
        return
    echoes = []
    async with ws:
        await ws.send("hello")
        echoes.append(await ws.recv())
        await ws.send(b"\x00\x01binary")
        echoes.append((await ws.recv()).hex())
        say({"open": True})
        await asyncio.sleep(a.idle)
        if a.expect_close:
            try:
                await ws.send("after idle")
                got = await asyncio.wait_for(ws.recv(), 10)
                say({"closed": False, "got": got})
            except ConnectionClosed as e:
                say({"closed": True, "code": e.rcvd.code if e.rcvd else None})
            return
        await ws.send("after idle")
        echoes.append(await ws.recv())
    say({"echoes": echoes})


if __name__ == "__main__":
    asyncio.run(main())
