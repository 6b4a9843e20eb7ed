"""Ridgeline edge agent: answer on the device when confident, escalate otherwise.

Importing this package loads no model and opens no socket.
"""

from .agent import EdgeAgent
from .decision import Decision
from .request.answer import Answer, AnswerTimings, SignalSummary
from .request.events import Decided, Done, Reset, TextChunk
from .request.options import AskOptions, RequestOptions
from .sdk.api import Answerer, ModelInfo, StreamEvent
from .sdk.client import EdgeClient
from .settings import EdgeSettings, load_edge_settings

__all__ = [
    "Answer",
    "AnswerTimings",
    "Answerer",
    "AskOptions",
    "Decided",
    "Decision",
    "Done",
    "EdgeAgent",
    "EdgeClient",
    "EdgeSettings",
    "ModelInfo",
    "RequestOptions",
    "Reset",
    "SignalSummary",
    "StreamEvent",
    "TextChunk",
    "load_edge_settings",
]
