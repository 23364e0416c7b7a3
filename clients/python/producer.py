#!/usr/bin/env python3
"""A minimal sales-ingest producer: streams N SalesEvents over
ingest.v1.IngestEvents/Stream in requests of --batch-size events and prints each ack as
one JSON line on stdout, in order:

    {"seq": 1, "accepted": 9, "duplicates": 0, "updated": 0, "rejected": [{"index": 6, "reason": "missing_sku", "detail": "..."}]}

A summary goes to stderr. Exit 0 when every request was acknowledged, 1 otherwise.

    .venv/bin/python3 clients/python/producer.py --target localhost:50051 --count 100 --invalid-every 10

With --invalid-every K every K-th event (the K-th, 2K-th, ...) is made invalid, cycling
through empty sku, qty 0, negative price and an unparsable ts, so the acks show
rejections. Event ids are <id-prefix>-<n>; a fresh random prefix is used unless one is
given, so rerunning with the same --id-prefix replays the same events (duplicates).

A secured server: --token (or PRODUCER_TOKEN from the environment) is sent as
`authorization: Bearer <token>`; --ca FILE connects over TLS, verifying the server
against that PEM CA bundle; --cert FILE --key FILE add a client certificate (mTLS,
GRPC_TLS_CLIENT_CA on the server); --server-name overrides the name checked in the
server's certificate (default: the host of --target).

    PRODUCER_TOKEN=... .venv/bin/python3 clients/python/producer.py --target ingest:50051 \\
        --ca ca.pem --cert client.pem --key client.key --count 10
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

import ingest_stubs

ingest_stubs.load()

import grpc  # noqa: E402
from ingest.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402
from sales.v1 import sales_event_pb2  # noqa: E402

# (field, bad value, reason code the server answers with)
INVALID_KINDS = [
    ("sku", "", "missing_sku"),
    ("qty", 0, "invalid_qty"),
    ("price", -1.0, "invalid_price"),
    ("ts", "yesterday", "invalid_ts"),
]


def make_event(n: int, prefix: str, invalid_every: int) -> sales_event_pb2.SalesEvent:
    event = sales_event_pb2.SalesEvent(
        sku=f"SKU-{n % 97}",
        qty=n % 10 + 1,
        price=round(1.25 + n % 50, 2),
        ts="2026-11-25T10:00:00Z",
        event_id=f"{prefix}-{n}",
    )
    if invalid_every and (n + 1) % invalid_every == 0:
        field, value, _ = INVALID_KINDS[((n + 1) // invalid_every - 1) % len(INVALID_KINDS)]
        setattr(event, field, value)
    return event


def requests(args: argparse.Namespace):
    seq = args.seq_start
    for start in range(0, args.count, args.batch_size):
        end = min(start + args.batch_size, args.count)
        events = [make_event(n, args.id_prefix, args.invalid_every) for n in range(start, end)]
        yield ingest_pb2.IngestRequest(seq=seq, events=events)
        seq += 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=os.environ.get("INGEST_TARGET", "localhost:50051"),
                   help="gRPC host:port (env INGEST_TARGET; default localhost:50051)")
    p.add_argument("--count", type=int, default=100, help="events to send (default 100)")
    p.add_argument("--batch-size", type=int, default=10, help="events per request (default 10)")
    p.add_argument("--invalid-every", type=int, default=0,
                   help="make every K-th event invalid (default 0: all valid)")
    p.add_argument("--id-prefix", default=None, help="event_id prefix (default: random)")
    p.add_argument("--seq-start", type=int, default=1, help="seq of the first request (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline for the whole stream, seconds")
    p.add_argument("--token", default=os.environ.get("PRODUCER_TOKEN"),
                   help="bearer token the server's PRODUCER_TOKEN requires (env PRODUCER_TOKEN)")
    p.add_argument("--ca", help="PEM CA bundle: connect over TLS and verify the server with it")
    p.add_argument("--cert", help="PEM client certificate chain, for mTLS (with --key and --ca)")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--server-name", help="name to verify in the server's certificate (default: the target's host)")
    args = p.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if args.cert and not args.ca:
        p.error("--cert needs --ca (a client certificate is sent over TLS only)")
    if args.count < 0 or args.batch_size < 1 or args.invalid_every < 0:
        p.error("--count must be >= 0, --batch-size >= 1, --invalid-every >= 0")
    if args.id_prefix is None:
        args.id_prefix = f"py-{uuid.uuid4().hex[:8]}"
    return args


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def channel(args: argparse.Namespace) -> grpc.Channel:
    """An insecure channel, or a TLS one (with a client certificate for mTLS)."""
    if not args.ca:
        return grpc.insecure_channel(args.target)
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, creds, options=options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    expected = (args.count + args.batch_size - 1) // args.batch_size
    totals = {"acks": 0, "accepted": 0, "duplicates": 0, "updated": 0, "rejected": 0}
    with channel(args) as chan:
        stub = ingest_pb2_grpc.IngestEventsStub(chan)
        try:
            for ack in stub.Stream(requests(args), timeout=args.timeout, metadata=metadata):
                rejected = [{"index": r.index, "reason": r.reason, "detail": r.detail} for r in ack.rejected]
                print(json.dumps({"seq": ack.seq, "accepted": ack.accepted,
                                  "duplicates": ack.duplicates, "updated": ack.updated,
                                  "rejected": rejected}), flush=True)
                totals["acks"] += 1
                totals["accepted"] += ack.accepted
                totals["duplicates"] += ack.duplicates
                totals["updated"] += ack.updated
                totals["rejected"] += len(rejected)
        except grpc.RpcError as e:
            print(f"producer: stream failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(f"producer: {args.count} events in {expected} requests to {args.target}: "
          f"{totals['acks']} acks, accepted {totals['accepted']}, duplicates {totals['duplicates']}, "
          f"rejected {totals['rejected']}, updated {totals['updated']}", file=sys.stderr)
    return 0 if totals["acks"] == expected else 1


if __name__ == "__main__":
    sys.exit(main())
