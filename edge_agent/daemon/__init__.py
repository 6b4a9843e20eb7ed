"""The edge daemon (``edge-agent serve``): an OpenAI-compatible HTTP API and a gRPC edge
service over one :class:`~edge_agent.agent.EdgeAgent`, with admission control, idle
unloading, metrics, reload and drain. Importing it opens no socket."""

from .server import Daemon, run

__all__ = ["Daemon", "run"]
