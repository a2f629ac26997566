"""gRPC echo server and client (grpcio) for the real-client suite.

server --port N: serves trustmesh.real.Echo over h2c (grpcio servers speak only HTTP/2).
client --target HOST:PORT --authority NAME --call unary|stream [--count N] [--sleep-ms MS]
       [--deadline S]: one call; prints one JSON line {"code": ..., "details": ..., "replies": [...]}
       and exits 0 whatever the status (the test asserts on it).
The stubs echo_pb2*.py come from grpc_tools.protoc, run by the test into its work folder.
"""
import argparse
import json
import sys
import time
from concurrent import futures

import grpc

import echo_pb2
import echo_pb2_grpc


class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        time.sleep(request.sleep_ms / 1000)
        peer = dict(context.invocation_metadata()).get("x-trustmesh-peer-identity", "")
        return echo_pb2.Msg(text=f"{request.text}|{peer}")

    def Stream(self, request, context):
        for i in range(request.count):
            time.sleep(request.sleep_ms / 1000)
            yield echo_pb2.Msg(text=f"{request.text}-{i}", count=i)


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def call(args):
    options = [("grpc.default_authority", args.authority)]
    with grpc.insecure_channel(args.target, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        msg = echo_pb2.Msg(text="hello", count=args.count, sleep_ms=args.sleep_ms)
        replies = []
        try:
            if args.call == "unary":
                replies.append(stub.Unary(msg, timeout=args.deadline).text)
            else:
                for r in stub.Stream(msg, timeout=args.deadline):
                    replies.append(r.text)
            code, details = "OK", ""
        except grpc.RpcError as e:
            code, details = e.code().name, e.details()
        print(json.dumps({"code": code, "details": details, "replies": replies}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--target")
    p.add_argument("--authority", default="b.test")
    p.add_argument("--call", choices=["unary", "stream"], default="unary")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--sleep-ms", type=int, default=0)
    p.add_argument("--deadline", type=float, default=30)
    args = p.parse_args()
    if args.mode == "server":
        serve(args.port)
    else:
        call(args)


if __name__ == "__main__":
    sys.exit(main())
