"""What both benchmark peers share: the command line the bench gives them, the
SalesEvent class (generated from the repository's proto/ by clients/python's
ingest_stubs on first use), the document `_id` rule of sales-ingest, the collection's
indexes, and waiting for the bench's SIGTERM once the work is done (so the bench reads
the finished process's /proc before it exits).

Every peer prints FIRST_MESSAGE when it has its first message (the bench's timed
window starts there, as a peer may buffer for seconds before its first write), stores
exactly --count events, then stops consuming and waits.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python"))

import ingest_stubs  # noqa: E402

ingest_stubs.load()

from sales.v1.sales_event_pb2 import SalesEvent  # noqa: E402,F401


FIRST_MESSAGE = "peer: first message"


def first_message() -> None:
    print(FIRST_MESSAGE, flush=True)


def args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--brokers", required=True, help="Kafka bootstrap servers, host:port")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True, help="consumer group (the peer's own)")
    p.add_argument("--mongodb", required=True, help="mongodb:// URL")
    p.add_argument("--database", required=True)
    p.add_argument("--collection", default="raw_sales")
    p.add_argument("--count", type=int, required=True, help="events to store, then stop")
    return p.parse_args()


def doc_id(event_id: str, topic: str, partition: int, offset: int) -> str:
    """sales-ingest's `_id`: the event id, else the Kafka coordinates."""
    return event_id or f"{topic}:{partition}:{offset}"


def ensure_indexes(url: str, database: str, collection: str) -> None:
    """The indexes sales-ingest creates (`_id` is unique by itself), so the database
    does the same work per document for every contender."""
    import pymongo

    client = pymongo.MongoClient(url)
    coll = client[database][collection]
    coll.create_index([("ts", 1)], name="ts_1")
    coll.create_index([("sku", 1)], name="sku_1")
    client.close()


def park(stored: int) -> None:
    """Reports the work done and blocks until SIGTERM or SIGINT."""
    print(f"peer: stored {stored} events; waiting for SIGTERM", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0):
        pass
