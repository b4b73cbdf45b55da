"""The cloud tier on Ray Serve (optional extra ``edgeflow[ray]``): replicas, autoscaling, ``@serve.batch`` and one
reply ledger across replicas, behind Serve's gRPC proxy. See docs/RAY.md.

    edgeflow serve-ray --node nodes/cloud.yaml                     # a local Ray cluster
    edgeflow serve-ray --node nodes/cloud.yaml --address auto      # join the cluster of `ray start --head`

Layer: beside ``edgeflow.scenario`` (above ``agent``); only this package and the CLI that starts it import ray.
"""

from edgeflow.rayserve.deployment import EdgeflowReplica, build_app, grpc_options
from edgeflow.rayserve.run import RayCloud, start

__all__ = ["EdgeflowReplica", "build_app", "grpc_options", "RayCloud", "start"]
