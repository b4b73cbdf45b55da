"""Start the Ray Serve cloud tier: on a local Ray cluster, or joining an existing one (``address``).

    cloud = start(config)                          # ray.init() here, Serve, the app; cloud.address = the gRPC proxy
    ... edge upstream: {address: cloud.address, metadata: {application: cloud.app_name}}
    cloud.shutdown()
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError, PeerUnavailable
from edgeflow.rayserve.deployment import LEDGER_NAME, LEDGER_NAMESPACE, build_app, grpc_options

__all__ = ["RayCloud", "start"]

_log = logging.getLogger(__name__)


@dataclass
class RayCloud:
    """A running Serve application of the cloud tier.

    Attributes:
        address: the gRPC proxy's ``host:port`` (an edge's ``upstream.address``).
        app_name: the application; callers send ``("application", app_name)`` metadata.
        owns_cluster: this process started the Ray cluster (``shutdown`` stops it).
    """

    address: str
    app_name: str
    owns_cluster: bool
    ledger_name: str = LEDGER_NAME
    _stopped: bool = field(default=False, repr=False)

    @property
    def metadata(self) -> dict[str, str]:
        """What an upstream needs in ``upstream.metadata`` to reach this application."""
        return {"application": self.app_name}

    def ledger(self) -> Any:
        """The reply ledger actor (``ray.get(cloud.ledger().stats.remote())``)."""
        import ray

        return ray.get_actor(self.ledger_name, namespace=LEDGER_NAMESPACE)

    def handle(self) -> Any:
        """A Serve handle to the deployment (``handle.replica_stats.remote()``)."""
        from ray import serve

        return serve.get_app_handle(self.app_name)

    def shutdown(self) -> None:
        """Delete the application and the ledger; stop Serve and Ray if this process started them."""
        if self._stopped:
            return
        self._stopped = True
        import ray
        from ray import serve

        try:
            serve.delete(self.app_name)
        except Exception:  # already gone with the cluster
            _log.debug("serve.delete failed", exc_info=True)
        try:
            ray.kill(self.ledger())
        except Exception:  # no ledger (exactly_once off) or gone
            pass
        if self.owns_cluster:
            serve.shutdown()
            ray.shutdown()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(config: NodeConfig, *, address: str | None = None, num_cpus: int | None = None,
          ready_timeout_s: float = 120.0) -> RayCloud:  # fmt: skip
    """Start (or join) a Ray cluster, start Serve's gRPC proxy and deploy the cloud tier of ``config``.

    Args:
        config: a cloud node file (its ``ray`` section: port, replicas, autoscaling).
        address: an existing cluster (``auto``, ``ray://host:10001``, ``host:6379``); None: start a local one.
        num_cpus: CPUs of a local cluster (default: all).
        ready_timeout_s: how long the replicas may take to load the model.

    Raises:
        ConfigError: a node that is not a plain cloud node, or ray is not installed.
        PeerUnavailable: the proxy did not answer within ``ready_timeout_s``.
    """
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ConfigError("the Ray Serve cloud tier needs ray: pip install 'edgeflow[ray]'") from None
    owns = not ray.is_initialized() and address is None
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    if config.ray.grpc_port == 0:
        config = config.with_overrides(**{"ray.grpc_port": _free_port("127.0.0.1")})
    host = config.listen.address.rsplit(":", 1)[0]
    serve.start(http_options={"host": host, "port": _free_port(host)}, grpc_options=grpc_options(config))
    app = build_app(config)
    # a route prefix makes the proxies route to the app (gRPC callers pick it by the "application" metadata)
    serve.run(app, name=config.ray.app_name, route_prefix=f"/{config.ray.app_name}", blocking=False)
    cloud = RayCloud(f"{host}:{config.ray.grpc_port}", config.ray.app_name, owns)
    try:
        _wait_ready(cloud, ready_timeout_s)
    except BaseException:
        cloud.shutdown()
        raise
    return cloud


def _wait_ready(cloud: RayCloud, timeout_s: float) -> None:
    """Until the proxy routes a Describe to a replica."""
    from edgeflow.errors import EdgeflowError
    from edgeflow.transport import PeerClient

    end = time.monotonic() + timeout_s
    with PeerClient(cloud.address, metadata=cloud.metadata) as peer:
        while True:
            try:
                peer.describe(timeout_s=5.0)
                return
            except EdgeflowError as e:
                if time.monotonic() > end:
                    raise PeerUnavailable(f"Ray Serve cloud at {cloud.address} not ready within {timeout_s:g} s: {e}") from None
                time.sleep(0.5)
