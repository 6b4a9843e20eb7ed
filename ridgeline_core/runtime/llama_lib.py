"""llama-cpp-python, imported on first use (never when a module is imported), with
llama.cpp's native log lines routed into Python logging (``ridgeline.llama_cpp``)."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from ..errors import MissingDependencyError

__all__ = ["import_llama_cpp"]

native_log = logging.getLogger("ridgeline.llama_cpp")

# ggml.h: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_state = {"level": logging.DEBUG}
_log_callback: Any = None


def import_llama_cpp() -> Any:
    """Import llama_cpp and route its native log lines into Python logging."""
    global _log_callback
    try:
        import llama_cpp
        import llama_cpp._logger
    except ImportError as exc:
        raise MissingDependencyError.for_module("llama-cpp-python", "edge") from exc
    if _log_callback is None:

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def forward(level: int, text: bytes, _: ctypes.c_void_p) -> None:
            if level != 5:
                _log_state["level"] = _GGML_LEVELS.get(level, logging.DEBUG)
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                native_log.log(_log_state["level"], "%s", message)

        _log_callback = forward
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    return llama_cpp
