"""ONNX Runtime sessions for the encoders and classifier heads: importing
``onnxruntime`` lazily (with the extra to install), the thread count, and a CPU session
whose load failures are ModelLoadError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, ModelLoadError

__all__ = ["import_onnxruntime", "open_session", "session_threads"]


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError.for_module("onnxruntime", "onnx") from exc
    return onnxruntime


def session_threads(threads: int | None) -> int:
    if threads is not None and threads > 0:
        return threads
    from .threads import default_threads

    return default_threads()


def open_session(model: Path, threads: int, what: str) -> Any:
    """An ONNX Runtime CPU session; a file it cannot load is a ModelLoadError."""
    ort = import_onnxruntime()
    if not Path(model).is_file():
        raise ModelLoadError(f"{what}: no ONNX file at {model}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings go to stderr, not to logging
    try:
        return ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    # onnxruntime's errors (InvalidProtobuf, InvalidGraph, Fail, ...) derive from Exception
    except Exception as exc:
        raise ModelLoadError(
            f"{what}: ONNX Runtime could not load {model}: {exc} (the file is damaged, not an "
            "ONNX model, or needs a newer onnxruntime than this one; for a store model run "
            "`edge-agent models build NAME --force`)"
        ) from exc
