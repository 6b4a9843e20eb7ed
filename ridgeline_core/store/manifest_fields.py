"""The checked field types of a manifest: model names, sha256 digests, relative paths.

Everything in a manifest that ends up in a file path passes one of these checks, so no
manifest can make the store read or write outside its directory. The pydantic types
(``Digest``, ``RelativePath``, ``ModelName``) raise ValueError inside validation; the
public checks (:func:`check_name`, :func:`check_digest`) raise ManifestError.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from ..errors import InvalidModelNameError, ManifestError

__all__ = [
    "DIGEST_PATTERN",
    "FILE_NAME_PATTERN",
    "NAME_PATTERN",
    "Digest",
    "ModelName",
    "RelativePath",
    "StrictModel",
    "check_digest",
    "check_name",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def check_name(name: str) -> str:
    """A model name: lowercase letters, digits, '.', '_' or '-'; never a path."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidModelNameError(
            f"invalid model name {name!r}: use 1-64 of a-z 0-9 . _ - "
            "(starting with a letter or digit, no '..')"
        )
    return name


def _digest(value: str) -> str:
    if not DIGEST_PATTERN.fullmatch(value):
        raise ValueError(f"invalid sha256 {value!r}: expected 64 lowercase hex characters")
    return value


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value or not path.parts:
        raise ValueError(f"invalid path {value!r}: must be relative, without '..'")
    return value


def _model_name(value: str) -> str:
    try:
        return check_name(value)
    except ManifestError as exc:
        raise ValueError(str(exc)) from None


Digest = Annotated[str, AfterValidator(_digest)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
ModelName = Annotated[str, AfterValidator(_model_name)]


def check_digest(digest: str) -> str:
    """A sha256 digest: exactly 64 lowercase hex characters."""
    try:
        return _digest(digest)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None


class StrictModel(BaseModel):
    """The base of every manifest table: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
