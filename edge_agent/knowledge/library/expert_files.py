"""What a collection names for its questions: a preferred local model and a LoRA adapter,
checked when the collection is added (the adapter is read, its tensors' types checked and
its sha256 recorded, so that a file changed later is refused, not loaded)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ridgeline_core.errors import InvalidRequestError
from ridgeline_core.runtime.gguf_tensors import GgufError, tensor_types

__all__ = ["ExpertFiles"]


@dataclass(frozen=True)
class ExpertFiles:
    model: str | None = None
    adapter: Path | None = None
    adapter_scale: float | None = None

    def meta(self) -> dict[str, str]:
        """The collection's metadata for these (only what is given changes)."""
        values: dict[str, str] = {}
        if self.model is not None:
            values["model"] = self.model
        if self.adapter_scale is not None:
            if not -4.0 <= self.adapter_scale <= 4.0:
                raise InvalidRequestError(
                    f"adapter scale {self.adapter_scale} is outside -4..4", param="adapter_scale"
                )
            values["adapter_scale"] = repr(float(self.adapter_scale))
        if self.adapter is not None:
            path = self.adapter.expanduser().absolute()
            values["adapter"] = str(path)
            values["adapter_sha256"] = _checked_digest(path)
        return values


def _checked_digest(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            try:
                tensor_types(handle)
            except GgufError as exc:
                raise InvalidRequestError(f"{path}: {exc}", param="adapter") from None
            handle.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InvalidRequestError(
            f"{path}: cannot read it ({exc.strerror})", param="adapter"
        ) from None
    return digest.hexdigest()
