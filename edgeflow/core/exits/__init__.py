"""Early exits, in three parts for three audiences:

    heads.py        ExitHead, where heads attach, the confidence rule: what the runtime runs
    calibration.py  CalibrationTable: exit rates and accuracies on held-out data: what the planner reads
    training.py     BranchyNet joint / frozen-backbone training: what the offline scripts use
"""

from edgeflow.core.exits.calibration import (
    DEFAULT_THRESHOLDS,
    CalibrationRow,
    CalibrationSamples,
    CalibrationTable,
    calibrate,
)
from edgeflow.core.exits.heads import (
    CRITERIA,
    ExitHead,
    ExitSpec,
    FeatureTap,
    check_exits,
    confidence,
    exit_specs_for,
    head_logits,
    partition_tap,
    position_after,
)
from edgeflow.core.exits.training import TrainConfig, evaluate, train_with_exits

__all__ = [
    "CRITERIA",
    "DEFAULT_THRESHOLDS",
    "ExitSpec",
    "ExitHead",
    "FeatureTap",
    "partition_tap",
    "position_after",
    "exit_specs_for",
    "check_exits",
    "confidence",
    "head_logits",
    "TrainConfig",
    "train_with_exits",
    "evaluate",
    "CalibrationSamples",
    "CalibrationRow",
    "CalibrationTable",
    "calibrate",
]
