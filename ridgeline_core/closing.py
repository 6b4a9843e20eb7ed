"""``with`` support for the objects that own something (a model, a channel, a thread, a
file) and give it back in ``close()``: one mixin instead of the same two methods in each."""

from __future__ import annotations

from typing_extensions import Self

__all__ = ["Closing"]


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
