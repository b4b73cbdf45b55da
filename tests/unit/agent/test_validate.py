"""The device's check of upstream answers (agent/validate.py): config, calibration, the reply's self-consistency,
and a lying cloud over a loopback wire (real encoding, no sockets) with the demo model."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import torch

from edgeflow.agent import Agent, ModelRuntime, Upstream
from edgeflow.agent.validate import Validator, calibration_samples
from edgeflow.config import NodeConfig, ValidateConfig
from edgeflow.core.plan import Plan
from edgeflow.errors import ConfigError
from edgeflow.testing.lying import WrongClass
from edgeflow.transport import LoopbackClient
from edgeflow.transport.messages import decode_reply

PLAN = "device[0:20]|lossless > cloud[20:]"


@pytest.fixture(scope="module")
def demo() -> ModelRuntime:
    from edgeflow.agent.loader import load_runtime

    return load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]"}))


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    from edgeflow.core.data import load_demo_dataset

    return load_demo_dataset("test")[0][:30]


@pytest.mark.parametrize(
    "section, error",
    [
        ("maybe", "validate.mode: Input should be 'off', 'flag' or 'recompute-locally' (got 'maybe')"),
        ({"mode": "flag", "false_alarm": 0.9}, "validate.false_alarm: Input should be less than 0.5"),
        ({"mode": "flag", "drop": 0}, "validate.drop: Input should be greater than 0"),
        ({"mode": "flag", "calibration": "test"}, "validate.calibration: Input should be 'demo'"),
        ({"mod": "flag"}, "validate.mod: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_field(section: Any, error: str) -> None:
    with pytest.raises(ConfigError, match="^device.yaml: " + error.replace("(", r"\(").replace(")", r"\)")):
        NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "validate": section}, source="device.yaml")


def test_only_the_device_validates_and_the_short_form_is_the_mode() -> None:
    with pytest.raises(ConfigError, match="^edge.yaml: validate: upstream answers are checked by the device"):
        NodeConfig.from_mapping({"role": "edge", "plan": "edge[0:]", "validate": "flag"}, source="edge.yaml")
    c = NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "validate": "recompute-locally"})
    assert c.validate_ == ValidateConfig(mode="recompute-locally")
    assert c.model_dump(mode="json")["validate"]["mode"] == "recompute-locally"  # dumps re-read as node files
    assert c.with_overrides(**{"validate.mode": "flag"}).validate_.mode == "flag"


def test_calibration_uses_the_calibration_split_never_the_test_split(demo: ModelRuntime) -> None:
    s = calibration_samples(demo)
    assert s.split == "calibration" and s.num_samples == 359 and s.positions == tuple(sorted(demo.exits))
    from edgeflow.core.data import load_demo_dataset

    x, _ = load_demo_dataset("calibration")
    with torch.inference_mode():
        assert (s.final == demo.model(x).argmax(1).numpy()).all()
    assert calibration_samples(demo) is s  # once per model and process


def test_the_device_head_is_the_deepest_on_its_slice(demo: ModelRuntime) -> None:
    v = Validator(ValidateConfig(mode="flag"), demo)
    assert v.head_of(Plan.parse("device[0:36] > cloud[36:]")) == 36
    assert v.head_of(Plan.parse("device[0:30] > cloud[30:]")) == 20
    assert v.head_of(Plan.parse("device[0:10] > cloud[10:]")) is None
    assert v.head_of(Plan.parse("cloud[0:]")) is None
    plan = Plan.parse("device[0:36] > cloud[36:]  exits@20:0.99")
    w = v.watch(plan, 0, 36)
    assert w is not None and w.position == 36 and w.threshold == float("inf")  # never fires
    assert v.watch(Plan.parse("device[0:20] > cloud[20:]  exits@20:0.99"), 0, 20) is None  # the plan's own exit


def test_a_reply_that_contradicts_itself_is_flagged(demo: ModelRuntime) -> None:
    v = Validator(ValidateConfig(mode="flag"), demo)
    plan = Plan.parse("device[0:20] > cloud[20:]  exits@36:0.9")
    logits = torch.tensor([[0.0, 8.0, 0.0, 0, 0, 0, 0, 0, 0, 0]])
    heads = {20: logits.clone()}
    own = float(logits.softmax(-1).max())
    assert v.check(plan, heads, [logits], "cloud", 36, own).status == "ok"
    bad = v.check(plan, heads, [logits], "cloud", 36, 0.5)
    assert bad.status == "flagged" and "exit_confidence 0.5000 is not its logits'" in bad.reason
    flat = torch.zeros(1, 10)
    low = v.check(plan, {20: flat}, [flat], "cloud", 36, 0.1)
    assert low.status == "flagged" and "< the plan's 0.9" in low.reason
    nan = v.check(plan, heads, [torch.full((1, 10), float("nan"))], "cloud", -1, 0.0)
    assert nan.status == "flagged" and "not finite" in nan.reason
    s = v.stats()
    assert s.checked == 4 and s.flagged == 3 and s.by_consistency == 3
    assert s.by_head == 1  # the NaN reply's argmax (class 0) is implausible to the head as well


class _LyingPeer:
    """A loopback peer whose replies pass through a :class:`WrongClass` liar (the gRPC one is LyingUpstream)."""

    def __init__(self, inner: LoopbackClient, liar: WrongClass):
        self.inner, self.liar, self.address = inner, liar, "liar-loopback"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def infer_bytes(self, request: bytes, *, timeout_s: float, wait_for_ready: bool = False) -> Any:
        from edgeflow.transport.messages import decode_request

        reply = self.inner.infer_bytes(request, timeout_s=timeout_s)
        lied = self.liar(reply, decode_request(request, self.inner.limits).request_id)
        return reply if lied is None else decode_reply(lied, self.inner.limits)


@pytest.fixture
def chain(demo: ModelRuntime) -> Iterator[Any]:
    made: list[Agent] = []

    def make(mode: str, liar: WrongClass) -> Agent:
        cloud = Agent(NodeConfig.from_mapping({"role": "cloud", "plan": PLAN}), demo, profile_repeats=0)
        peer = _LyingPeer(LoopbackClient(cloud, address="cloud-loopback"), liar)
        up = Upstream(peer, fingerprint=demo.fingerprint, role="device", connect_s=1.0)
        node = {"role": "device", "plan": PLAN, "upstream": {"address": "loopback:1"}, "validate": mode}
        device = Agent(NodeConfig.from_mapping(node), demo, upstream=up, profile_repeats=0)
        made.extend([device, cloud])
        return device

    yield make
    for a in made:
        a.close()


def test_recompute_locally_answers_flipped_requests_as_the_unsplit_model(chain: Any, demo: ModelRuntime,
                                                                         test_images: torch.Tensor) -> None:  # fmt: skip
    liar = WrongClass(0.5, seed=11)
    device = chain("recompute-locally", liar)
    got = [device.submit_local([test_images[i : i + 1]], request_id=f"r{i}", deadline=time.monotonic() + 30)
           for i in range(len(test_images))]  # fmt: skip
    with torch.inference_mode():
        unsplit = demo.model(test_images).argmax(1).tolist()
    flipped = [i for i in range(len(got)) if f"r{i}" in liar.flipped]
    assert len(flipped) >= 8
    for i in flipped:
        assert got[i].breakdown.upstream_classes != (unsplit[i],)
    caught = [i for i in flipped if got[i].breakdown.validation == "recomputed"]
    assert len(caught) >= 0.9 * len(flipped)
    for i in caught:  # the device finished the model itself: the unsplit model's answer, exactly
        assert got[i].breakdown.answered_by == "device" and "p_head" in got[i].breakdown.validation_reason
        assert torch.equal(got[i].values[0], demo.model(test_images[i : i + 1]).detach())
    assert device.validator is not None and device.validator.stats().recomputed == len(caught)


def test_a_careless_liar_is_caught_by_its_own_confidence(chain: Any, test_images: torch.Tensor) -> None:
    """Raising the told class without fixing the reported confidence: caught on the reply alone."""
    device = chain("flag", WrongClass(1.0, seed=2, choice="runner-up", careless=True))
    plan = "device[0:20]|lossless > cloud[20:]  exits@36:0.5"  # the cloud exits: its reply reports a confidence
    got = [device.submit_local([test_images[i : i + 1]], request_id=f"c{i}", deadline=time.monotonic() + 30, plan=plan)
           for i in range(10)]  # fmt: skip
    exited = [r for r in got if r.breakdown.exit_position == 36]
    assert exited and all(r.breakdown.validation == "flagged" for r in exited)
    assert all("exit_confidence" in r.breakdown.validation_reason for r in exited)


def test_a_model_the_check_cannot_be_calibrated_for_is_a_config_error() -> None:
    from edgeflow.core.zoo import build_model

    torch.manual_seed(0)
    bare = ModelRuntime(build_model("resnet18", width=4, num_classes=10, image_size=16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="^validate: the model has no exit heads"):
        Validator(ValidateConfig(mode="flag"), bare)
    node = {"role": "device", "plan": "device[0:]", "validate": "flag"}
    with pytest.raises(ConfigError, match="^validate: the model has no exit heads"):
        Agent(NodeConfig.from_mapping(node), bare, profile_repeats=0)
