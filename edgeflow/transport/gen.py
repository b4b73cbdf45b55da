"""Regenerate the protobuf/gRPC stubs in ``edgeflow/transport/_gen`` from ``proto/``.

    python -m edgeflow.transport.gen            # rewrite the committed stubs
    python -m edgeflow.transport.gen --check    # exit 1 if they are stale

``proto/edgeflow/v1`` becomes ordinary stubs. The .proto files are mapped to the virtual path
``edgeflow/transport/_gen`` so that the generated ``*_pb2_grpc.py`` imports ``edgeflow.transport._gen.agent_pb2``
(protoc derives imports from that path).

``proto/kserve`` (package ``inference``, the KServe v2 service) becomes a serialized descriptor set in
``kserve_v2_descriptor.py``, loaded into a private descriptor pool (``edgeflow.transport.kserve_pb``): tritonclient
registers its own ``inference.*`` messages in protobuf's default pool, and a second file defining them there would
make importing both fail.

Needs grpcio-tools at exactly :data:`GRPCIO_TOOLS` (the test extra pins it): its protoc writes gencode 6.30, which
protobuf 6.30+ and 7 both load (a runtime may be newer than the gencode, never older), so edgeflow imports in an
environment that has tritonclient (protobuf < 7). Another protoc would write other bytes; the check says so.
The runtime needs only grpcio and protobuf.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_DIR", "KSERVE_PROTO_DIR", "GEN_DIR", "GRPCIO_TOOLS", "generate", "stale_files"]

_REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = _REPO / "proto" / "edgeflow" / "v1"
KSERVE_PROTO_DIR = _REPO / "proto" / "kserve"
GEN_DIR = Path(__file__).resolve().parent / "_gen"
GRPCIO_TOOLS = "1.72.2"  # protoc 30.2 -> Python gencode 6.30.0 (loads on protobuf >= 6.30, 7 included)
_VIRTUAL = "edgeflow/transport/_gen"
_INIT = '"""Generated from proto/ by ``python -m edgeflow.transport.gen``. Do not edit."""\n'
_KSERVE_MODULE = "kserve_v2_descriptor.py"


def _check_tools() -> None:
    from importlib.metadata import version

    found = version("grpcio-tools")
    if found != GRPCIO_TOOLS:
        raise RuntimeError(
            f"grpcio-tools {found} is installed; the stubs are generated with grpcio-tools=={GRPCIO_TOOLS} (gencode "
            f"6.30, loadable on protobuf 6 and 7): pip install 'grpcio-tools=={GRPCIO_TOOLS}' (the test extra pins it)"
        )


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR, kserve_dir: Path = KSERVE_PROTO_DIR) -> list[Path]:
    """Run protoc on every ``*.proto`` in ``proto_dir`` (flat stub modules) and ``kserve_dir`` (a descriptor-set
    module), writing into ``out_dir``.

    Returns:
        The files written, sorted.

    Raises:
        RuntimeError: protoc failed (its message is on stderr), or grpcio-tools is not :data:`GRPCIO_TOOLS`.
    """
    _check_tools()
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(proto_dir.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    written = _generate_kserve(out_dir, kserve_dir, include)
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
        for f in sorted((Path(tmp) / _VIRTUAL).iterdir()):
            target = out_dir / f.name
            target.write_bytes(f.read_bytes())
            written.append(target)
    init = out_dir / "__init__.py"
    init.write_text(_INIT)
    return sorted([*written, init])


def _generate_kserve(out_dir: Path, kserve_dir: Path, include: Path) -> list[Path]:
    """``kserve_v2_descriptor.py``: the KServe protos as one serialized ``FileDescriptorSet`` (see module doc)."""
    from grpc_tools import protoc

    protos = sorted(kserve_dir.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "kserve.binpb"
        args = ["protoc", f"-I{kserve_dir}", f"-I{include}", f"--descriptor_set_out={out}", *[p.name for p in protos]]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
        data = out.read_bytes()
    lines = [
        f'"""Generated from proto/kserve ({", ".join(p.name for p in protos)}) by ``python -m edgeflow.transport.gen``.',
        "Do not edit. A serialized FileDescriptorSet, loaded into a private pool by edgeflow.transport.kserve_pb.\"\"\"",
        "",
        "FILE_DESCRIPTOR_SET = (",
        *[f"    {data[i : i + 64]!r}" for i in range(0, len(data), 64)],
        ")",
        "",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / _KSERVE_MODULE
    target.write_text("\n".join(lines))
    return [target]


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
