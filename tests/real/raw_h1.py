"""A raw HTTP/1.1 client for what the usual clients do not send: a chunked request body with
trailers. --addr HOST:PORT --host NAME --path P [--declare] [--no-te]: sends `POST P` with the
body "hello" in one chunk and the trailer `x-client-trailer: yes` (named in a `Trailer:` header
only with --declare) and `TE: trailers` (not with --no-te); prints the raw response (head, body
and any trailers) as one JSON line {"response": TEXT} once the server closes or 10 s pass.
"""
import argparse
import json
import socket


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--declare", action="store_true")
    p.add_argument("--no-te", action="store_true")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    declare = "Trailer: x-client-trailer\r\n" if args.declare else ""
    te = "" if args.no_te else "TE: trailers\r\n"
    req = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}\r\nTransfer-Encoding: chunked\r\n"
        f"{te}Connection: close\r\n{declare}\r\n"
        "5\r\nhello\r\n0\r\nx-client-trailer: yes\r\n\r\n"
    )
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(req.encode())
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    print(json.dumps({"response": got.decode("latin-1")}))


if __name__ == "__main__":
    main()
