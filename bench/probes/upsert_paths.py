"""What replacing stored documents costs on a MongoDB-protocol server, per write path.

Usage: python3 bench/probes/upsert_paths.py MONGODB_URL [--prefill N] [--batch N]

Each path corrects `--batch` stored documents (out of `--prefill`) in one round of
commands, as the service's upsert mode would, and reports the median time per
document over several rounds, next to inserting the same number of new documents.
The collection `probe_upsert_paths.c` is dropped before every round and at the end.
Paths that the server refuses (transactions on a standalone mongod, `bulkWrite`
before 8.0) are reported as refused.
"""
import argparse
import statistics
import time

import pymongo
from bson import Int64


def documents(ids, qty):
    return [
        {"_id": i, "event_id": i, "sku": "SKU-1", "qty": qty, "price": 9.99,
         "ts": Int64(1_700_000_000_000), "source": "grpc"}
        for i in ids
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--prefill", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    client = pymongo.MongoClient(a.url)
    db = client.probe_upsert_paths
    stored = documents([f"ev-{i}" for i in range(a.prefill)], 1)

    def ids_of(batch):
        return [d["_id"] for d in batch]

    def insert_new(batch):
        db.c.insert_many(documents([f"new-{i}" for i in range(len(batch))], 2), ordered=False)

    def insert_duplicates(batch):
        try:
            db.c.insert_many(batch, ordered=False)
        except pymongo.errors.BulkWriteError:
            pass

    def update(make):
        return lambda batch: db.command(
            {"update": "c", "ordered": False, "updates": [make(d) for d in batch]})

    def delete_then_insert(batch, session=None):
        db.command({"delete": "c", "deletes": [{"q": {"_id": {"$in": ids_of(batch)}}, "limit": 0}]},
                   session=session)
        db.c.insert_many(batch, ordered=False, session=session)

    def in_transaction(batch):
        with client.start_session() as s, s.start_transaction():
            delete_then_insert(batch, s)

    def merge(batch):
        list(db.aggregate([{"$documents": batch},
                           {"$merge": {"into": "c", "on": "_id", "whenMatched": "replace",
                                       "whenNotMatched": "insert"}}]))

    def bulk_write(batch):
        client.admin.command({"bulkWrite": 1, "ordered": False, "nsInfo": [{"ns": f"{db.name}.c"}],
                              "ops": [{"update": 0, "filter": {"_id": d["_id"]}, "updateMods": d,
                                       "upsert": True} for d in batch]})

    paths = [
        ("insert_many of new documents (reference)", insert_new, False),
        ("insert_many of the stored ids (11000 each)", insert_duplicates, False),
        ("update: replacement, upsert (the service's path)",
         update(lambda d: {"q": {"_id": d["_id"]}, "u": d, "upsert": True}), True),
        ("update: $set of every field, upsert",
         update(lambda d: {"q": {"_id": d["_id"]},
                           "u": {"$set": {k: v for k, v in d.items() if k != "_id"}},
                           "upsert": True}), True),
        ("delete {_id: {$in}} then insert_many (not atomic)", delete_then_insert, True),
        ("the same in a transaction", in_transaction, True),
        ("aggregate $documents + $merge", merge, True),
        ("bulkWrite (8.0), replacement upsert", bulk_write, True),
    ]
    reference = None
    print(f"{'path':52s} {'µs/doc':>8s} {'× ref':>6s}")
    for name, run, corrects in paths:
        times = []
        try:
            for r in range(a.rounds):
                db.c.drop()
                for k in range(0, a.prefill, 10_000):
                    db.c.insert_many(stored[k:k + 10_000], ordered=False)
                batch = documents([f"ev-{r * a.batch + i}" for i in range(a.batch)], 3)
                started = time.perf_counter()
                run(batch)
                times.append(time.perf_counter() - started)
                if corrects and db.c.count_documents({"qty": 3}) != a.batch:
                    raise RuntimeError("not every document was replaced")
        except (pymongo.errors.PyMongoError, RuntimeError) as e:
            print(f"{name:52s} refused: {str(e).splitlines()[0][:60]}")
            continue
        per = statistics.median(times) * 1e6 / a.batch
        reference = reference or per
        print(f"{name:52s} {per:8.1f} {per / reference:6.2f}")
    db.c.drop()


if __name__ == "__main__":
    main()
