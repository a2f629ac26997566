#!/usr/bin/env python3
"""A stand-in for traefik/whoami in CI (no image registry there): answers every request with
200 and what it received (request line and headers), `--port N` as whoami takes it."""
import argparse
import http.server
import socket


class Echo(http.server.BaseHTTPRequestHandler):
    """Echoes the request line and headers, as whoami does."""

    protocol_version = "HTTP/1.1"

    def _echo(self):
        body = f"Hostname: {socket.gethostname()}\n{self.requestline}\n{self.headers}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _echo

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        print(f"whoami: {self.address_string()} {format % args}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=80)
    port = parser.parse_args().port
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Echo).serve_forever()


if __name__ == "__main__":
    main()
