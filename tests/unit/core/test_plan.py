"""Plan text form: golden strings, round trips, and malformed text naming its problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeflow.core.plan import TIERS, ExitPoint, Plan, Stage
from edgeflow.errors import PlanError

GOLDEN = [
    "device[0:14]|int8 > edge[14:31]|int4 > cloud[31:]  exits@9:0.92",
    "device[0:14]|int8 > cloud[14:]",
    "edge[0:5]|lossless > cloud[5:]",
    "cloud[0:]",
    "device[0:40]",
    "device[0:3]|fp16 > edge[3:]  exits@1:0.5,2:0.99",
    "device[0:3]|int8c:z3:a-1 > edge[3:]",
    "input|png > edge[0:52]|int8 > cloud[52:]",
    "input|jpeg > cloud[0:]  exits@20:0.9",
]


@pytest.mark.parametrize("text", GOLDEN)
def test_golden_text_round_trips(text: str) -> None:
    plan = Plan.parse(text)
    assert str(plan) == text
    assert Plan.parse(str(plan)) == plan


def test_fields_of_the_issue_example() -> None:
    plan = Plan.parse("device[0:14]|int8 > edge[14:31]|int4 > cloud[31:]  exits@9:0.92")
    assert plan.stages == (
        Stage("device", 0, 14, "int8"),
        Stage("edge", 14, 31, "int4"),
        Stage("cloud", 31, None, None),
    )
    assert plan.exits == (ExitPoint(9, 0.92),)
    assert plan.cuts == (14, 31)
    assert plan.upstream_of("device") == Stage("edge", 14, 31, "int4")
    assert plan.upstream_of("cloud") is None
    assert plan.exits_in(0, 14) == (ExitPoint(9, 0.92),)
    assert plan.exits_in(14, 31) == ()
    assert plan.resolved(40).stages[-1].stop == 40


def test_omitted_hop_codec_means_lossless_and_is_written_out() -> None:
    plan = Plan.parse("  device[0:14]  >  cloud[14:] ")
    assert str(plan) == "device[0:14]|lossless > cloud[14:]"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no stages"),
        ("device[0:14]|int8 >", "stage 1 is empty"),
        ("device(0:14)", "is not 'tier[start:stop]|codec'"),
        ("phone[0:14] > cloud[14:]", "unknown tier 'phone'"),
        ("cloud[0:14] > device[14:]", "chain order"),
        ("device[0:14] > device[14:]", "appears twice"),
        ("device[0:x] > cloud[14:]", "stop 'x' is not a non-negative integer"),
        ("device[-1:14] > cloud[14:]", "start '-1'"),
        ("device[0:14] > cloud[15:]", "not contiguous: 14 != 15"),
        ("device[3:14] > cloud[14:]", "must start at position 0"),
        ("device[0:] > cloud[14:]", "only the last stage"),
        ("device[0:14]|int8 > cloud[14:]|int8", "last stage has no hop"),
        ("device[0:14]|INT8 > cloud[14:]", "codec 'INT8' is not a codec name"),
        ("device[0:14]|int8 > cloud[14:]  exits@", "lists no exits"),
        ("device[0:14]|int8 > cloud[14:]  exits@9", "is not 'position:threshold'"),
        ("device[0:14]|int8 > cloud[14:]  exits@9:high", "threshold 'high' is not a number"),
        ("device[0:14]|int8 > cloud[14:]  exits@9:1.5", "threshold must be a number in (0, 1]"),
        ("device[0:14]|int8 > cloud[14:]  exits@9:0.5,5:0.5", "increasing position"),
        ("device[0:14]|int8 > cloud[14:]exits@9:0.5", "whitespace before 'exits@'"),
        ("device[0:14]|int8 > cloud[14:20]  exits@25:0.5", "not before the model output 20"),
        ("device[5:5]", "stop must be an int > start"),
        ("input|png > device[0:14]|int8 > cloud[14:]", "runs the input, so no input codec"),
        ("input|PNG > cloud[0:]", "input codec 'PNG' is not a codec name"),
        ("input > cloud[0:]", "is not 'input|codec'"),
        ("input|png", "no stages after its input codec"),
    ],
)
def test_malformed_text_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(PlanError) as err:
        Plan.parse(text)
    assert problem in str(err.value)


def test_check_against_a_model() -> None:
    plan = Plan.parse("device[0:14]|int8 > cloud[14:]  exits@9:0.9")
    plan.check(40, cuts={9, 14, 20}, codecs={"int8", "lossless"}, exit_positions={9})
    with pytest.raises(PlanError, match="runs past the model output"):
        Plan.parse("device[0:50]|int8 > cloud[50:]").check(40)
    with pytest.raises(PlanError, match="hop at position 14 is not a candidate cut"):
        plan.check(40, cuts={9, 20})
    with pytest.raises(PlanError, match="unknown codec 'int8'"):
        plan.check(40, codecs={"lossless"})
    with pytest.raises(PlanError, match="no exit head at position 9"):
        plan.check(40, exit_positions={20})
    with pytest.raises(PlanError, match="must run to the model output 40"):
        Plan.parse("device[0:14]|int8 > cloud[14:30]").check(40)
    with pytest.raises(PlanError, match="is empty"):
        Plan.parse("device[0:14]|int8 > cloud[14:]").check(14)
    with pytest.raises(PlanError, match="unknown input codec 'webp'"):
        Plan.parse("input|webp > cloud[0:]").check(40, codecs={"png", "lossless"})


def test_the_input_codec_is_part_of_the_plan() -> None:
    plan = Plan.parse("input|jpeg > edge[0:52]|int8 > cloud[52:]")
    assert plan.input_codec == "jpeg" and plan.sends_input and plan.tiers == ("edge", "cloud")
    assert plan != Plan.parse("edge[0:52]|int8 > cloud[52:]")  # another codec on the input hop: another plan
    assert str(plan.with_input_codec(None)) == "edge[0:52]|int8 > cloud[52:]"
    assert not Plan.parse("device[0:]").sends_input


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    tiers = draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=3, unique=True).map(lambda t: sorted(t, key=TIERS.index)))
    bounds = sorted(draw(st.lists(st.integers(1, 200), min_size=len(tiers), max_size=len(tiers), unique=True)))
    starts = [0, *bounds[:-1]]
    open_end = draw(st.booleans())
    codecs = st.sampled_from(["lossless", "int8", "int4", "fp16", "bf16", "int8c", "int2"])
    stages = []
    for i, tier in enumerate(tiers):
        last = i == len(tiers) - 1
        stop = None if last and open_end else bounds[i]
        stages.append(Stage(tier, starts[i], stop, None if last else draw(codecs)))
    limit = bounds[-1]
    positions = sorted(draw(st.sets(st.integers(1, limit - 1), max_size=3))) if limit > 1 else []
    thresholds = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)
    exits = tuple(ExitPoint(p, draw(thresholds)) for p in positions)
    input_codec = draw(st.sampled_from([None, "lossless", "png", "jpeg"])) if tiers[0] != "device" else None
    return Plan(tuple(stages), exits, input_codec)


@given(plans())
def test_any_plan_round_trips_through_text(plan: Plan) -> None:
    assert Plan.parse(str(plan)) == plan
    assert str(Plan.parse(str(plan))) == str(plan)


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_plan_error(text: str) -> None:
    try:
        plan = Plan.parse(text)
    except PlanError:
        return
    assert Plan.parse(str(plan)) == plan
