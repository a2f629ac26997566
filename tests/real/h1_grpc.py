"""An HTTP/1.1 client (requests) that calls a gRPC method the way the wire carries it: a POST
of one length-prefixed protobuf message (gRPC over HTTP/2 §Length-Prefixed-Message), for the
test of an HTTP/1.1 caller to an h2c-only app.

--url URL --host NAME --text T: POSTs Msg{text: T}; prints one JSON line
{"status": ..., "version": ..., "content_type": ..., "reply": <text field of the reply>}.
"""
import argparse
import json

import requests


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--text", default="hello")
    args = p.parse_args()
    text = args.text.encode()
    msg = b"\x0a" + bytes([len(text)]) + text  # field 1 (string), length-delimited
    frame = b"\x00" + len(msg).to_bytes(4, "big") + msg
    headers = {"Host": args.host, "Content-Type": "application/grpc", "TE": "trailers"}
    r = requests.post(args.url, data=frame, headers=headers, timeout=30)
    body = r.content
    reply = None
    if len(body) >= 7 and body[5] == 0x0A:
        reply = body[7 : 7 + body[6]].decode()
    print(json.dumps({
        "status": r.status_code,
        "version": r.raw.version,
        "content_type": r.headers.get("content-type"),
        "grpc_status": r.headers.get("grpc-status"),
        "reply": reply,
    }))


if __name__ == "__main__":
    main()
