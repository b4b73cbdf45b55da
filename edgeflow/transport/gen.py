"""Regenerate the protobuf/gRPC stubs in ``edgeflow/transport/_gen`` from ``proto/edgeflow/v1``.

    python -m edgeflow.transport.gen            # rewrite the committed stubs
    python -m edgeflow.transport.gen --check    # exit 1 if they are stale

The .proto files are mapped to the virtual path ``edgeflow/transport/_gen`` so that the generated
``*_pb2_grpc.py`` imports ``edgeflow.transport._gen.agent_pb2`` (protoc derives imports from that path).
Needs grpcio-tools (a test dependency); the runtime needs only grpcio and protobuf.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_DIR", "GEN_DIR", "generate", "stale_files"]

_REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = _REPO / "proto" / "edgeflow" / "v1"
GEN_DIR = Path(__file__).resolve().parent / "_gen"
_VIRTUAL = "edgeflow/transport/_gen"
_INIT = '"""Generated from proto/edgeflow/v1 by ``python -m edgeflow.transport.gen``. Do not edit."""\n'


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc on every ``*.proto`` in ``proto_dir``, writing flat modules into ``out_dir``.

    Returns:
        The files written, sorted.

    Raises:
        RuntimeError: protoc failed (its message is on stderr).
    """
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(proto_dir.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{_VIRTUAL}={proto_dir}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted((Path(tmp) / _VIRTUAL).iterdir()):
            target = out_dir / f.name
            target.write_bytes(f.read_bytes())
            written.append(target)
    init = out_dir / "__init__.py"
    init.write_text(_INIT)
    return sorted([*written, init])


def stale_files(gen_dir: Path = GEN_DIR) -> list[str]:
    """Names of committed stub files that differ from a fresh generation (missing or extra count too)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp))}
    committed = {p.name: p.read_bytes() for p in gen_dir.glob("*.py*") if p.is_file()}
    return sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeflow.transport.gen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the stubs are stale")
    ns = parser.parse_args(argv)
    if ns.check:
        stale = stale_files()
        if stale:
            print(f"stale generated stubs in {GEN_DIR}: {', '.join(stale)}; run python -m edgeflow.transport.gen")
            return 1
        print("generated stubs are up to date")
        return 0
    for p in generate(GEN_DIR):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
