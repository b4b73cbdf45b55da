"""The planner: choose cuts, codecs and early exits for the measured conditions, and re-plan as they change.

Pure (numpy, no clocks, no I/O), in the order data flows:

    exitmodel.py   ExitModel: exit behaviour per threshold combo (exact from samples, or conservative from the
                   calibration table)
    costmodel.py   TierSpec, LinkState, Conditions -> CostModel.evaluate(plan) -> Breakdown
    search.py      Planner(model).search(conditions, objective) -> SearchResult (exact, vectorised)
    oracle.py      brute_force(...): every plan, one by one (the reference in tests)
    estimator.py   LinkEstimator, ComputeCorrection, CodecCorrection, QueueTracker -> ConditionsTracker.conditions(now_s)
    replan.py      Replanner.observe_*(...) / decide(now_s) -> Decision (hysteresis)
    build.py       planner inputs measured from a model (exit samples, head seconds)
    synthetic.py   seeded random cost models for tests and benchmarks

    model = CostModel([TierSpec("device", prof, compute_scale=8), TierSpec("cloud", prof)], exits)
    result = Planner(model).search(Conditions((LinkState(20e6, 0.04),)))
    print(result.best.plan, result.best.breakdown.latency_s)
"""

from .costmodel import (
    DEFAULT_CODEC_DROP_PTS,
    IMAGE_CODECS,
    OBJECTIVES,
    Breakdown,
    Choice,
    Conditions,
    CostModel,
    LinkState,
    PowerSpec,
    TierSpec,
    codec_drops_from_cuts,
    node_param_nbytes,
)
from .estimator import CodecCorrection, ComputeCorrection, ConditionsTracker, LinkEstimator, QueueTracker
from .exitmodel import DEFAULT_EXIT_GRID, ExitModel
from .oracle import all_choices, brute_force
from .replan import Decision, Replanner
from .search import Candidate, Planner, SearchResult, search

__all__ = [
    "DEFAULT_CODEC_DROP_PTS",
    "DEFAULT_EXIT_GRID",
    "IMAGE_CODECS",
    "OBJECTIVES",
    "Breakdown",
    "Candidate",
    "Choice",
    "CodecCorrection",
    "ComputeCorrection",
    "Conditions",
    "ConditionsTracker",
    "CostModel",
    "Decision",
    "ExitModel",
    "LinkEstimator",
    "LinkState",
    "Planner",
    "PowerSpec",
    "QueueTracker",
    "Replanner",
    "SearchResult",
    "TierSpec",
    "all_choices",
    "brute_force",
    "codec_drops_from_cuts",
    "node_param_nbytes",
    "search",
]
