"""Evaluation harness logic: answer matching, question sets, metrics and calibrators.

Pure code (numpy and the standard library): nothing here loads a model or calls a network.
"""

from .calibration import (
    CALIBRATORS,
    Calibrator,
    IsotonicCalibrator,
    LogisticCalibrator,
    PlattCalibrator,
    load_calibrator,
)
from .dataset import QAItem, arithmetic_items, load_dataset
from .matcher import is_correct, normalise
from .metrics import (
    apgr,
    auroc,
    brier,
    coverage_accuracy,
    cpt,
    ece,
    pgr,
    random_router_baseline,
    routing_curve,
    summarise,
)

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "IsotonicCalibrator",
    "LogisticCalibrator",
    "PlattCalibrator",
    "QAItem",
    "apgr",
    "arithmetic_items",
    "auroc",
    "brier",
    "coverage_accuracy",
    "cpt",
    "ece",
    "is_correct",
    "load_calibrator",
    "load_dataset",
    "normalise",
    "pgr",
    "random_router_baseline",
    "routing_curve",
    "summarise",
]
