"""Benchmark peer: Quix Streams with its built-in MongoDBSink, as a Python team would
write the job with it: the topic's values decoded by Quix's ProtobufDeserializer, each
mapped to sales-ingest's document fields, written by MongoDBSink (bulk upserts keyed by
`_id` = the message key, the event id), offsets committed by Quix's checkpoints (every
5 s by default) after the sink's write. Stops after --count events.

    python3 bench/peers/quix_peer.py --brokers H:P --topic T --group G \
        --mongodb URL --database D --count N
"""
from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from urllib.parse import urlparse

from quixstreams import Application
from quixstreams.models.serializers.protobuf import ProtobufDeserializer
from quixstreams.sinks.community.mongodb import MongoDBSink

import common


FIRST = [True]


def document(value: dict) -> dict:
    if FIRST[0]:
        FIRST[0] = False
        common.first_message()
    return {
        "event_id": value.get("event_id"),
        "sku": value.get("sku"),
        "qty": int(value.get("qty", 0)),
        "price": float(value.get("price", 0.0)),
        "ts": datetime.fromisoformat(value["ts"].replace("Z", "+00:00")),
        "processed_at": datetime.now(timezone.utc),
        "source": "kafka",
    }


def main() -> None:
    a = common.args(__doc__.splitlines()[0])
    common.ensure_indexes(a.mongodb, a.database, a.collection)
    url = urlparse(a.mongodb)
    app = Application(
        broker_address=a.brokers,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-peer-state-"),
        use_changelog_topics=False,
        # The tests' short group timings: a dead member is replaced within 6 s.
        consumer_extra_config={
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        },
    )
    topic = app.topic(
        a.topic,
        key_deserializer="str",
        value_deserializer=ProtobufDeserializer(
            common.SalesEvent, preserving_proto_field_name=True
        ),
    )
    sink = MongoDBSink(
        host=url.hostname,
        port=url.port or 27017,
        db=a.database,
        collection=a.collection,
        directConnection=True,
    )
    sdf = app.dataframe(topic).apply(document)
    sdf.sink(sink)
    app.run(count=a.count)
    common.park(a.count)


if __name__ == "__main__":
    main()
