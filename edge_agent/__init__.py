"""Ridgeline edge agent: answer on the device when confident, escalate otherwise.

Importing this package loads no model and opens no socket.
"""

from .agent import Answer, AnswerTimings, EdgeAgent, SignalSummary
from .request.decision import Decision
from .sdk.api import Answerer, AskOptions, Done, ModelInfo, Reset, StreamEvent, TextChunk
from .sdk.client import EdgeClient
from .settings import EdgeSettings, load_edge_settings

__all__ = [
    "Answer",
    "AnswerTimings",
    "Answerer",
    "AskOptions",
    "Decision",
    "Done",
    "EdgeAgent",
    "EdgeClient",
    "EdgeSettings",
    "ModelInfo",
    "Reset",
    "SignalSummary",
    "StreamEvent",
    "TextChunk",
    "load_edge_settings",
]
