"""Benchmark peer: the Python service's design. aiokafka consumer (manual commit),
protobuf decode, pydantic validation, motor `insert_many(ordered=False)` in batches of
1,000 (a partial batch after 0.2 s, the bench's FLUSH_INTERVAL), duplicates (11000)
counted as stored, the offsets committed after each write. Stops after --count events.

    python3 bench/peers/aiokafka_peer.py --brokers H:P --topic T --group G \
        --mongodb URL --database D --count N
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Optional

from aiokafka import AIOKafkaConsumer
from motor.motor_asyncio import AsyncIOMotorClient
from pydantic import BaseModel, Field, ValidationError
from pymongo.errors import BulkWriteError

import common

BATCH_SIZE = 1000
FLUSH_INTERVAL = 0.2


class Sale(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(gt=0, le=1_000_000)
    price: float = Field(ge=0, le=1e9, allow_inf_nan=False)
    ts: datetime
    event_id: Optional[str] = Field(default=None, max_length=128)


async def write(coll, docs: list[dict]) -> None:
    try:
        await coll.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        other = [w for w in e.details.get("writeErrors", []) if w.get("code") != 11000]
        if other:
            raise


async def main() -> int:
    """Consumes and stores --count events; returns how many were valid."""
    a = common.args(__doc__.splitlines()[0])
    common.ensure_indexes(a.mongodb, a.database, a.collection)
    coll = AsyncIOMotorClient(a.mongodb)[a.database][a.collection]
    consumer = AIOKafkaConsumer(
        a.topic,
        bootstrap_servers=a.brokers,
        group_id=a.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # The tests' short group timings: a dead member is replaced within 6 s.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    taken = invalid = 0
    batch: list[dict] = []
    first = time.monotonic()
    try:
        while taken < a.count:
            polled = await consumer.getmany(timeout_ms=100, max_records=BATCH_SIZE)
            if polled and taken == 0:
                common.first_message()
            now = datetime.now(timezone.utc)
            for tp, messages in polled.items():
                for m in messages:
                    if taken >= a.count:
                        break
                    taken += 1
                    try:
                        e = common.SalesEvent.FromString(m.value)
                        sale = Sale(sku=e.sku, qty=e.qty, price=e.price, ts=e.ts,
                                    event_id=e.event_id or None)
                    except (ValidationError, ValueError):
                        invalid += 1
                        continue
                    d = sale.model_dump()
                    d["_id"] = common.doc_id(e.event_id, tp.topic, tp.partition, m.offset)
                    d["processed_at"] = now
                    d["source"] = "kafka"
                    batch.append(d)
            if batch and (len(batch) >= BATCH_SIZE or taken >= a.count
                          or time.monotonic() - first >= FLUSH_INTERVAL):
                await write(coll, batch)
                await consumer.commit()
                batch = []
            if not batch:
                first = time.monotonic()
        if batch:
            await write(coll, batch)
            await consumer.commit()
        print(f"peer: {invalid} invalid events skipped", flush=True)
    finally:
        await consumer.stop()
    return taken - invalid


if __name__ == "__main__":
    common.park(asyncio.run(main()))
