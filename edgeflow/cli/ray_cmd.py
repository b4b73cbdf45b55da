"""``edgeflow serve-ray``: the cloud tier as a Ray Serve deployment (docs/RAY.md).

    edgeflow serve-ray --node nodes/cloud.yaml                         # a local Ray cluster on this machine
    ray start --head && edgeflow serve-ray --node nodes/cloud.yaml --address auto   # join a (multi-node) cluster

It prints ``edgeflow serve-ray cloud listening on <host:port> application <name>`` once the replicas answer, then
serves until SIGTERM/SIGINT (deleting the application; a cluster it started is stopped too).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from edgeflow.errors import EdgeflowError

__all__ = ["register"]


def serve_ray(
    node: Path = typer.Option(..., "--node", help="a cloud node file, e.g. nodes/cloud.yaml (its ray section)"),
    address: Optional[str] = typer.Option(None, "--address", help="join this Ray cluster (auto, host:6379, ray://host:10001); default: start a local one"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of a local cluster (default: all)"),
    grpc_port: Optional[int] = typer.Option(None, "--grpc-port", min=0, max=65535, help="override ray.grpc_port (0: any free port)"),
    replicas: Optional[int] = typer.Option(None, "--replicas", min=1, help="a fixed replica count (overrides autoscaling)"),
    min_replicas: Optional[int] = typer.Option(None, "--min-replicas", min=0),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", min=1),
    target_ongoing_requests: Optional[float] = typer.Option(None, "--target-ongoing-requests", min=0.01),
    plan: Optional[str] = typer.Option(None, "--plan", help="override the plan"),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="override model.artifact"),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
) -> None:
    """Serve the cloud tier on Ray Serve (replicas, autoscaling, @serve.batch) until SIGTERM or SIGINT."""
    from edgeflow.cli.agent_cmds import _fail, _setup_logging, read_node_file

    _setup_logging(log_level)
    overrides = {f"ray.{k}": v for k, v in (("grpc_port", grpc_port), ("num_replicas", replicas),
                                             ("min_replicas", min_replicas), ("max_replicas", max_replicas),
                                             ("target_ongoing_requests", target_ongoing_requests)) if v is not None}  # fmt: skip
    try:
        cfg = read_node_file(node, plan=plan, artifact=artifact)
        if overrides:
            cfg = cfg.with_overrides(**overrides)
        from edgeflow.rayserve import start

        cloud = start(cfg, address=address, num_cpus=num_cpus)
    except EdgeflowError as e:
        _fail(str(e))
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"edgeflow serve-ray cloud listening on {cloud.address} application {cloud.app_name}", flush=True)
    logging.getLogger("edgeflow.rayserve").info("edge upstream: {address: %s, metadata: {application: %s}}",
                                                 cloud.address, cloud.app_name)  # fmt: skip
    while not stop.wait(0.5):
        pass
    cloud.shutdown()
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Mount ``serve-ray`` on the main ``edgeflow`` app."""
    app.command("serve-ray")(serve_ray)
