#!/usr/bin/env python3
"""gRPC health check of a sales-ingest server (grpc.health.v1.Health/Check, via
grpcio-health-checking). Prints the status and exits 0 when it is SERVING, 1 when it
is anything else or the server cannot be reached.

    .venv/bin/python3 clients/python/healthcheck.py --target localhost:50051
    .venv/bin/python3 clients/python/healthcheck.py --service ingest.v1.IngestEvents
"""
from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=os.environ.get("INGEST_TARGET", "localhost:50051"),
                   help="gRPC host:port (env INGEST_TARGET; default localhost:50051)")
    p.add_argument("--service", default="", help='service name ("" = the whole server)')
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = p.parse_args(argv)
    with grpc.insecure_channel(args.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"{args.target}: health check failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
