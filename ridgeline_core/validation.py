"""Request validation messages, in one place.

Request types (the edge's :class:`~edge_agent.request.options.RequestOptions`, the daemon's
HTTP bodies) are pydantic models; :func:`invalid_request` turns pydantic's error into the
:class:`~ridgeline_core.errors.InvalidRequestError` a user reads, naming the field
(``messages[2].content``, ``ridgeline.mode``) in ``param`` and in words that say what
would be accepted. A validator that raises a :class:`RidgelineError` itself (an
``UnsupportedError`` for a feature we do not offer) passes through pydantic untouched.

:data:`JsonNumber` and :data:`JsonInt` are the number types of request bodies: JSON
numbers only (``true`` and ``"3"`` are refused, as a typed API would), finite, and for
integers a float with no fraction (``2.0``) is accepted. An integer no float holds
(``1e400`` written out) is not finite either.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from .errors import InvalidRequestError

__all__ = ["JsonInt", "JsonNumber", "field_name", "invalid_request"]


def _number(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("not_number", "must be a number")
    if isinstance(value, int) and abs(value) > _FLOAT_MAX:  # JSON integers have no bound
        raise PydanticCustomError("not_finite", "must be a finite number")
    if not math.isfinite(value):
        raise PydanticCustomError("not_finite", "must be a finite number")
    return value


_FLOAT_MAX = int(sys.float_info.max)


def _integer(value: Any) -> Any:
    value = _number(value)
    if isinstance(value, float):
        if value != int(value):
            raise PydanticCustomError("not_integer", "must be an integer")
        return int(value)
    return value


JsonNumber = Annotated[float, BeforeValidator(_number)]
JsonInt = Annotated[int, BeforeValidator(_integer)]


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("messages", 2, "content")`` -> ``messages[2].content``."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else part
    return name


def invalid_request(exc: ValidationError) -> InvalidRequestError:
    """The first problem pydantic found, as the error a user reads."""
    error = exc.errors()[0]
    field = field_name(tuple(error["loc"]))
    return InvalidRequestError(_message(field, error), param=field or None)


_SIMPLE = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "missing": "is required",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _message(field: str, error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind in _SIMPLE:
        return f"{field} {_SIMPLE[kind]}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{field} must be {words} {ctx[key]} (got {error['input']!r})"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"{field} {error['input']!r} is not one of {choices}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return f"{field} must not be empty"
        return f"{field} needs at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"{field} has {ctx.get('actual_length')} items; at most {ctx.get('max_length')}"
    if kind in ("not_number", "not_finite", "not_integer"):
        return f"{field} {error['msg']}"
    return f"{field}: {error['msg']}" if field else error["msg"]
