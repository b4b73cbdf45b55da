"""Over 10,000 hostile messages against one live agent process (``edgeflow.testing.fuzz``).

One cloud agent with a 1 MiB message limit serves a short range (valid requests start late in the model),
so the time goes into the decode path. Every message must get a precise refusal with a message, never
UNKNOWN or INTERNAL, and OK only where it is in fact well formed; a valid request still succeeds every 500
messages; the agent's peak resident memory stays bounded. The count is fixed: seeded generators per class,
plus a derandomized hypothesis run over structured requests. ``benchmarks/bench_fuzz.py`` runs more.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeflow.core.codecs import codec_from_spec, get_codec
from edgeflow.errors import EdgeflowError
from edgeflow.testing.fuzz import KINDS, REFUSALS, FuzzTarget, fuzz_agent, plan_ok
from edgeflow.transport import SERVICE_NAME
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import DATATYPES
from edgeflow.transport.wire import frame

CALLS = 8_000  # stream calls carry 4..23 messages each: ~10,500 messages
MAX_MESSAGE_BYTES = 1 << 20
RSS_GROWTH_LIMIT_KIB = 300 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory, tools):  # type: ignore[no-untyped-def]
    node = yaml.safe_load((tools.NODES / "cloud.yaml").read_text())
    node["limits"] = {"max_message_mb": MAX_MESSAGE_BYTES / 2**20, "max_tensors": 32}  # "oversized" stays cheap
    node["queues"] = {"compute": 64, "inflight": 8, "workers": 16}
    path = Path(tmp_path_factory.mktemp("fuzz")) / "cloud.yaml"
    path.write_text(yaml.safe_dump(node))
    a = tools.AgentProcess(path, plan=tools.LOSSLESS_PLAN)
    yield a
    assert a.stop() == 0, a.log
    assert "Traceback" not in a.log and "internal error" not in a.log, a.log[-5000:]


@pytest.fixture(scope="module")
def target(runtime) -> FuzzTarget:  # type: ignore[no-untyped-def]
    return FuzzTarget.from_runtime(runtime, max_message_bytes=MAX_MESSAGE_BYTES)


def test_ten_thousand_hostile_messages(agent, target) -> None:  # type: ignore[no-untyped-def]
    report = fuzz_agent(agent.address, target, calls=CALLS, seed=0, threads=4, valid_every=500, pid=agent.proc.pid)
    print("\nfuzz:", json.dumps({k: v for k, v in report.to_json().items() if k != "by_kind"}))
    assert not report.failures, "\n".join(report.failures[:30])
    assert report.messages >= 10_000
    assert set(report.by_kind) == set(KINDS)
    assert set(report.by_status) <= REFUSALS | {"OK"}, report.by_status
    assert report.valid_ok >= report.messages // 500 + 2
    mem = report.memory_kib
    assert mem["end_VmHWM"] < mem["start_VmRSS"] + RSS_GROWTH_LIMIT_KIB, mem


# ------------------------------------------------------------------------------------------ hypothesis
def _tensor_meta(name: str, datatype: str, shape: tuple[int, ...]) -> st.SearchStrategy:
    return st.tuples(
        st.one_of(st.just(name), st.just(""), st.text(max_size=12)),
        st.one_of(st.just(datatype), st.sampled_from([*DATATYPES.values(), "", "FP8", "fp32"])),
        st.one_of(st.just(shape), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10).map(tuple),
                  st.lists(st.integers(0, 70), min_size=len(shape), max_size=len(shape)).map(tuple)),
        st.sampled_from(["lossless", "lossless:z3", "lossless:q1", "int8", "brotli", "", "lossless:z99"]),
    )  # fmt: skip


def _expected(t: FuzzTarget, fp: str, start: int, stop: int, metas: list, payloads: list, good: list[bytes],
              plan: str) -> frozenset[str]:  # fmt: skip
    """OK exactly when every field is well formed, else a refusal."""
    name, datatype, shape = t.tensors[0]

    def codec_ok(spec: str) -> bool:
        try:
            return codec_from_spec(spec).name == "lossless"
        except EdgeflowError:
            return False

    ok = (fp == t.fingerprint and start in t.compatible and (stop == 0 or t.position < stop <= t.num_positions)
          and len(metas) == 1 and metas[0][0] in (name, "") and metas[0][1] == datatype and metas[0][2] == shape
          and codec_ok(metas[0][3]) and payloads == good and (plan == "" or plan_ok(plan, t)))  # fmt: skip
    return frozenset({"OK"}) if ok else REFUSALS


def test_structured_requests_from_hypothesis(agent, target) -> None:  # type: ignore[no-untyped-def]
    t = target
    name, datatype, shape = t.tensors[0]
    good = [get_codec("lossless").encode(torch.rand(shape, generator=torch.Generator().manual_seed(1)))]
    seen: dict[str, int] = {}
    with grpc.insecure_channel(agent.address) as ch:
        infer = ch.unary_unary(f"/{SERVICE_NAME}/Infer")

        @settings(max_examples=600, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(
            fp=st.one_of(st.just(t.fingerprint), st.text(max_size=40)),
            start=st.one_of(st.just(t.position), st.integers(-(2**31), 2**31 - 1)),
            stop=st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1), st.integers(0, t.num_positions + 1)),
            metas=st.one_of(st.just([(name, datatype, shape, "lossless")]),
                            st.lists(_tensor_meta(name, datatype, shape), max_size=40)),
            payloads=st.one_of(st.just(good), st.lists(st.binary(max_size=64), max_size=40)),
            plan=st.one_of(st.just(""), st.text(max_size=60),
                           st.sampled_from(["cloud[0:]", "device[0:20]|int8 > cloud[20:]", "cloud[0:5]"])),
        )  # fmt: skip
        def check(fp: str, start: int, stop: int, metas: list, payloads: list, plan: str) -> None:
            ident = f"hyp-{sum(seen.values())}"  # unique: a reused id is test_reused_id_..._gets_its_own_answer's
            msg = pb.InferRequest(id=ident, model_fingerprint=fp, start=start, stop=stop)
            for n, d, s, c in metas:
                m = msg.inputs.add(name=n, datatype=d, shape=s)
                m.parameters["codec"].string_param = c
            if plan:
                msg.parameters["plan"].string_param = plan
            expect = _expected(t, fp, start, stop, metas, payloads, good, plan)
            try:
                infer(frame(msg.SerializeToString(), 15, payloads), timeout=30)
                status, details = "OK", ""
            except grpc.RpcError as e:
                status, details = e.code().name, e.details() or ""
            seen[status] = seen.get(status, 0) + 1
            assert status in expect, f"{status} {details!r}: expected {sorted(expect)} for {msg}"
            assert status == "OK" or details.strip()

        check()
    print("\nhypothesis statuses:", seen)
    assert sum(seen.values()) >= 600 and seen.get("OK", 0) >= 1


def test_reused_id_with_other_content_gets_its_own_answer(agent, target) -> None:  # type: ignore[no-untyped-def]
    """A hostile message that reuses a served request's id must still be checked, never answered from a replay
    cache keyed by id (and sizes): a corrupt payload of the same size must be refused."""
    import random

    from edgeflow.testing.hostile import valid_request

    with grpc.insecure_channel(agent.address) as ch:
        infer = ch.unary_unary(f"/{SERVICE_NAME}/Infer")
        good = valid_request(target, random.Random("reuse"))
        infer(good, timeout=30)
        bad = bytearray(good)
        bad[-3] ^= 0xFF  # inside the payload's zstd body: same id, same sizes, corrupt content
        with pytest.raises(grpc.RpcError) as err:
            infer(bytes(bad), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
