"""An encoder's ONNX graph: its session, the token inputs it takes (checked at load), the
output to read (one vector per text, or token states to pool), and its position limit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, ModelLoadError
from .onnx_session import open_session

__all__ = ["EncoderGraph"]

log = logging.getLogger("ridgeline_core.runtime.onnx")

# The token inputs an encoder may declare; anything else is refused at load.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# A 2-D output with this name is BERT's tanh-projected [CLS] state, not a sentence embedding.
_NOT_POOLED = {"pooler_output"}
_NUMPY_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class EncoderGraph:
    """An encoder's ONNX session and what it takes and gives: integer token inputs among
    ``_TOKEN_INPUTS``, and either one vector per text or token states to pool."""

    def __init__(self, model: Path, threads: int, name: str) -> None:
        self.name = name
        self.session: Any = open_session(model, threads, name)
        self.inputs = _token_inputs(self.session, model, name)
        self.output, self.pooled = _embedding_output(self.session, model, name)

    def cap_length(self, max_length: int) -> int:
        """``max_length``, or the model's position count when that is smaller."""
        props = self.session.get_modelmeta().custom_metadata_map
        positions = props.get("max_position_embeddings")
        if positions is not None and positions.isdigit() and int(positions) < max_length:
            log.warning(
                "%s: max_length %d exceeds the model's %s positions; inputs are cut there",
                self.name,
                max_length,
                positions,
            )
            return int(positions)
        return max_length

    def declared_dim(self) -> int | None:
        node = next(o for o in self.session.get_outputs() if o.name == self.output)
        last = node.shape[-1]
        return last if isinstance(last, int) and last > 0 else None

    def states(self, ids: Any, mask: Any, types: Any) -> Any:
        """The graph's output for a padded batch."""
        session = self.session
        if session is None:
            raise ModelError(f"{self.name} was closed")
        available = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "position_ids": np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape),
        }
        feed = {name: available[name].astype(dtype) for name, dtype in self.inputs.items()}
        (states,) = session.run([self.output], feed)
        return states


def _token_inputs(session: Any, model: Path, name: str) -> dict[str, type[np.integer[Any]]]:
    """The graph's inputs and their integer types; any other input is refused."""
    inputs: dict[str, type[np.integer[Any]]] = {}
    for node in session.get_inputs():
        if node.name not in _TOKEN_INPUTS or node.type not in _NUMPY_INTS:
            raise ModelLoadError(
                f"{name}: {model} has input {node.name!r} ({node.type}); a text "
                f"encoder takes integer inputs among {', '.join(_TOKEN_INPUTS)}"
            )
        inputs[node.name] = _NUMPY_INTS[node.type]
    if "input_ids" not in inputs:
        raise ModelLoadError(f"{name}: {model} has no input_ids input")
    return inputs


def _embedding_output(session: Any, model: Path, name: str) -> tuple[str, bool]:
    """The output to read, and whether it is already one vector per text."""
    outputs = session.get_outputs()
    for node in outputs:
        if len(node.shape) == 2 and node.name not in _NOT_POOLED:
            return node.name, True
    for node in outputs:
        if len(node.shape) == 3:
            return node.name, False
    raise ModelLoadError(
        f"{name}: {model} has no [batch, sequence, hidden] or [batch, dim] output "
        f"(outputs: {', '.join(f'{o.name} {o.shape}' for o in outputs)})"
    )
