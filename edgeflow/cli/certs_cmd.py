"""``edgeflow certs``: a local CA, node certificates and a bearer token, and the node-file lines to use them.

    edgeflow certs --out certs/ --nodes device,edge,cloud            # certs/ca.pem, certs/edge.pem, ...
    edgeflow certs --out certs/ --nodes edge --host edge.lan --force
    edgeflow certs --out certs/ --artifact models/mine.safetensors   # pin that artifact's fingerprint

The node-file lines also pin ``model.fingerprint``: TLS says who a peer is, the pin says what model every
tier may load, so replaced weights or a rewritten calibration table stop a tier at start-up.

For tests, demos and lab chains; see docs/SECURITY.md. Keys and the token are written with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from edgeflow.errors import EdgeflowError

__all__ = ["register", "node_snippets"]

_CHAIN = ("device", "edge", "cloud")


def node_snippets(
    out: Path, nodes: list[str], node_dir: Path, token: Path | None, fingerprint: str | None = None
) -> str:
    """The YAML lines each node file needs, paths relative to ``node_dir`` (node-file paths resolve from it).

    A node named like a tier (device, edge, cloud) gets ``upstream.tls``/``upstream.auth`` when a tier
    above it is in ``nodes``, and a server ``tls``/``auth`` when a tier below it is. With ``fingerprint``
    every node also gets ``model.fingerprint`` pinned to it.
    """

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), node_dir.resolve())

    ca = rel(out / "ca.pem")
    lines = []
    for name in nodes:
        cert, key = rel(out / f"{name}.pem"), rel(out / f"{name}.key")
        tier = _CHAIN.index(name) if name in _CHAIN else None
        serves = tier is None or any(n in _CHAIN[:tier] for n in nodes) or name == "cloud"
        calls_up = tier is not None and any(n in _CHAIN[tier + 1 :] for n in nodes)
        lines.append(f"# {node_dir / (name + '.yaml')}")
        if fingerprint is not None:
            lines.append("model:")
            lines.append("  artifact: ...                   # as before")
            lines.append(f"  fingerprint: {fingerprint}   # pinned: any other artifact is refused at start-up")
        if serves:
            lines.append(f"tls: {{cert: {cert}, key: {key}, ca: {ca}}}   # ca: clients must present certificates")
            if token is not None:
                lines.append(f"auth: {{token_file: {rel(token)}}}")
        if calls_up:
            lines.append("upstream:")
            lines.append("  address: ...                    # as before")
            lines.append(f"  tls: {{ca: {ca}, cert: {cert}, key: {key}}}")
            if token is not None:
                lines.append(f"  auth: {{token_file: {rel(token)}}}")
        lines.append("")
    return "\n".join(lines)


def certs(
    out: Path = typer.Option(Path("certs"), "--out", help="folder for ca.pem, <node>.pem, <node>.key, token"),
    nodes: str = typer.Option("device,edge,cloud", "--nodes", help="comma-separated node names"),
    host: list[str] = typer.Option([], "--host", help="extra host name or IP for every certificate (repeatable)"),
    days: int = typer.Option(365, "--days", min=1, max=3650, help="validity in days"),
    token: bool = typer.Option(True, "--token/--no-token", help="also write a random bearer token to OUT/token"),
    node_dir: Path = typer.Option(Path("nodes"), "--node-dir", help="where the node files live (for relative paths)"),
    force: bool = typer.Option(False, "--force", help="replace existing files"),
    artifact: str = typer.Option(
        "builtin:demo", "--artifact", help="artifact whose fingerprint the node files pin ('' for none)"
    ),
) -> None:
    """Make a test CA, a certificate per node (SANs 127.0.0.1, localhost, the node name) and a token."""
    from edgeflow.transport.certs import make_certs, write_token

    names = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        fp = _artifact_fingerprint(artifact) if artifact else None
        made = make_certs(out, names, hosts=host, days=days, overwrite=force)
        token_path = write_token(out / "token", overwrite=force) if token else None
    except EdgeflowError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {made.ca} (CA; its key {made.ca_key} signs more nodes: keep it private)")
    for n in made.nodes:
        typer.echo(f"wrote {n.cert} and {n.key} (mode 600)")
    if token_path is not None:
        typer.echo(f"wrote {token_path} (mode 600; the token itself never goes in a node file)")
    typer.echo("\nnode-file lines (paths relative to the node files):\n")
    typer.echo(node_snippets(out, names, node_dir, token_path, fp))


def _artifact_fingerprint(spec: str) -> str:
    """The content fingerprint of ``builtin:NAME`` or an artifact path (verified by loading it)."""
    from edgeflow.agent.loader import ZOO_PREFIX, builtin_artifact_path
    from edgeflow.config import BUILTIN_PREFIX, TEXT_PREFIX
    from edgeflow.core.artifact import load_artifact
    from edgeflow.errors import ConfigError

    if spec.startswith((ZOO_PREFIX, TEXT_PREFIX)):
        raise ConfigError(f"--artifact: {spec.partition(':')[0]}: models have no artifact file; pin the fingerprint "
                          "`edgeflow describe` shows")
    path = builtin_artifact_path(spec[len(BUILTIN_PREFIX) :]) if spec.startswith(BUILTIN_PREFIX) else Path(spec)
    return load_artifact(path).fingerprint


def register(app: typer.Typer) -> None:
    """Mount ``certs`` on the main ``edgeflow`` app."""
    app.command("certs")(certs)
