"""Ridgeline edge agent: answer on the device when confident, escalate otherwise.

Importing this package loads no model and opens no socket.
"""

from .agent import Answer, AnswerTimings, EdgeAgent, SignalSummary
from .settings import EdgeSettings, load_edge_settings

__all__ = [
    "Answer",
    "AnswerTimings",
    "EdgeAgent",
    "EdgeSettings",
    "SignalSummary",
    "load_edge_settings",
]
