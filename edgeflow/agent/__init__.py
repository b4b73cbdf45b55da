"""Agents: one process per tier (device, edge, cloud) running its range of the model over the transport.

    served = serve(config)                       # an agent behind a gRPC server
    with DeviceClient.from_config(device_cfg) as device:
        result = device.infer(images)            # result.output, result.breakdown
"""

from edgeflow.agent.agent import Agent, LocalAnswer
from edgeflow.agent.client import AgentClient, DeviceClient, Result
from edgeflow.agent.live import LivePlanner, PlanSwitch
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.serve import ServedAgent, serve
from edgeflow.agent.upstream import Upstream

__all__ = [
    "Agent",
    "LocalAnswer",
    "AgentClient",
    "DeviceClient",
    "Result",
    "LivePlanner",
    "PlanSwitch",
    "ModelRuntime",
    "load_runtime",
    "ServedAgent",
    "serve",
    "Upstream",
]
