"""An HTTP/1.1-only app (Python's http.server) for the real-client suite.

--port N [--record FILE]: serves on 127.0.0.1:N; every request is appended to FILE as one JSON
line {"method", "path", "version", "headers", "body_bytes", "trailers"} once its body is read.
It answers `Expect: 100-continue` as http.server does (100, then reads the body) and reads
chunked request bodies with their trailers. Routes:
  /cut       Content-Length: 1000, then 10 bytes and the connection closed (a body cut short)
  /trailers  a chunked body "hello" and the trailer `x-app-trailer: done`, declared in a
             `Trailer:` header only when the request asks with `?declared`
  anything else  200 with the JSON line as body
An HTTP/2 preface is no HTTP/1.1 request: http.server answers it 400 or closes.
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record = None

    def read_body(self):
        """The request body's length and its trailers (chunked), read to the end."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    break
                total += len(self.rfile.read(size))
                self.rfile.readline()
            trailers = {}
            while True:
                line = self.rfile.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                trailers.setdefault(name.strip().lower(), []).append(value.strip())
            return total, trailers
        length = int(self.headers.get("Content-Length", "0"))
        return len(self.rfile.read(length)) if length else 0, None

    def handle_one(self):
        body_bytes, trailers = self.read_body()
        seen = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": body_bytes,
            "trailers": trailers,
        }
        if self.record:
            with open(self.record, "a") as f:
                f.write(json.dumps(seen) + "\n")
        if self.path.startswith("/cut"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/trailers"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            if "declared" in self.path:
                self.send_header("Trailer", "x-app-trailer")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\nx-app-trailer: done\r\n\r\n")
            return
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record")
    args = p.parse_args()
    Handler.record = args.record
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
