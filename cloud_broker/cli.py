"""``cloud-broker``: settings and the model store of the broker.

The gRPC server (``cloud-broker serve``) arrives with the broker issue; the
wire contract it will serve is ``protos/ridgeline/v1/broker.proto``.
"""

from __future__ import annotations

from ridgeline_core.cli import root_group

from .settings import load_broker_settings

__all__ = ["cli", "main"]

cli = root_group(
    "cloud-broker",
    "Ridgeline cloud broker: fronts large models for requests the edge escalates.",
    load_broker_settings,
)


def main() -> None:
    cli(prog_name="cloud-broker")
