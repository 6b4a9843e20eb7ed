"""Local knowledge: collections of the user's documents ("memory experts") that the local
model answers from, with citations, and the privacy policy for what of them may leave the
device.

::

    knowledge add NAME PATH...   sources ─► blocks ─► chunks ─► embeddings ─► chunks.sqlite
    ask --knowledge NAME|auto    question ─► experts (collections) ─► passages ─► prompt [1] [2]
                                 escalation ─► policy: never | question-only | redacted | allowed
"""

from .expert_files import ExpertFiles
from .experts import ExpertScore, Retrieval, Weights, retrieve
from .ingest import IngestReport
from .library import AUTO, CollectionInfo, Library, check_collection_name
from .policy import ESCALATE_SETTINGS, Escalate, strictest
from .prompt import cited, with_passages
from .search import Passage

__all__ = [
    "AUTO",
    "ESCALATE_SETTINGS",
    "CollectionInfo",
    "Escalate",
    "ExpertFiles",
    "ExpertScore",
    "IngestReport",
    "Library",
    "Passage",
    "Retrieval",
    "Weights",
    "check_collection_name",
    "cited",
    "retrieve",
    "strictest",
    "with_passages",
]
