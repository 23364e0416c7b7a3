"""Generates the Python Protobuf/gRPC stubs from the repository's proto/ with
grpcio-tools and puts them on sys.path. Nothing generated is committed: the stubs go to
clients/python/.gen/<hash of the .proto files>/ (git-ignored) on first use and are
reused until a .proto file changes.

    ../../.venv/bin/python3 ingest_stubs.py            # generate now and print the directory
    import ingest_stubs; ingest_stubs.load()   # from producer.py / healthcheck.py

INGEST_PROTO_DIR overrides where the .proto files are (default: ../../proto).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = Path(os.environ.get("INGEST_PROTO_DIR", HERE.parent.parent / "proto"))
GEN_ROOT = HERE / ".gen"
PROTOS = ["sales/v1/sales_event.proto", "ingest/v1/ingest.proto"]


def _digest() -> str:
    h = hashlib.sha256()
    for rel in PROTOS:
        h.update(rel.encode())
        h.update((PROTO_DIR / rel).read_bytes())
    return h.hexdigest()[:16]


def generate() -> Path:
    """Generates the stubs unless they are already there; returns their directory."""
    missing = [rel for rel in PROTOS if not (PROTO_DIR / rel).is_file()]
    if missing:
        sys.exit(f"ingest_stubs: {missing} not found under {PROTO_DIR} (set INGEST_PROTO_DIR)")
    out = GEN_ROOT / _digest()
    if (out / "ingest" / "v1" / "ingest_pb2_grpc.py").is_file():
        return out
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("ingest_stubs: grpcio-tools is missing: scripts/install-deps --python installs it into .venv")
    GEN_ROOT.mkdir(parents=True, exist_ok=True)
    # Generate into a scratch directory and rename it into place, so concurrent first
    # runs never see half-written stubs.
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=GEN_ROOT))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={tmp}",
        f"--grpc_python_out={tmp}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(f"ingest_stubs: protoc failed on {PROTO_DIR}")
    try:
        tmp.rename(out)
    except OSError:
        # Another process got there first; its stubs are the same.
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load() -> Path:
    """Generates the stubs if needed and makes `sales.v1` / `ingest.v1` importable."""
    out = generate()
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return out


if __name__ == "__main__":
    print(generate())
