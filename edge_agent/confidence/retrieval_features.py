"""Confidence features of an answer from local knowledge (group ``retrieval``).

They read :class:`~.features.RetrievalEvidence`; an answer without knowledge has none,
and every one of them is 0 for it, so a calibration fitted on knowledge answers and one
fitted on plain answers can share the feature table.
"""

from __future__ import annotations

from .features import _STOP_WORDS, Evidence, _feature, _words

_CITATION = {"1", "2", "3", "4", "5", "6", "7", "8", "9"}


@_feature("retrieval", "similarity of the best passage to the question")
def _retrieval_best(e: Evidence) -> float:
    r = e.retrieval
    return r.scores[0] if r is not None and r.scores else 0.0


@_feature("retrieval", "best passage's similarity minus the second's")
def _retrieval_margin(e: Evidence) -> float:
    r = e.retrieval
    return r.scores[0] - r.scores[1] if r is not None and len(r.scores) > 1 else 0.0


@_feature("retrieval", "chosen collection's score minus the best one not chosen (agreement)")
def _expert_margin(e: Evidence) -> float:
    r = e.retrieval
    if r is None or not r.expert_scores:
        return 0.0
    chosen = r.expert_scores[: r.experts_chosen]
    rest = r.expert_scores[r.experts_chosen :]
    return chosen[-1] - rest[0] if chosen and rest else 1.0


@_feature("retrieval", "share of the answer's own words found in the passages")
def _answer_in_passages(e: Evidence) -> float:
    r = e.retrieval
    if r is None:
        return 0.0
    first = e.text.split("\n", 1)[0]
    known = set(_words(e.prompt)) | _STOP_WORDS | _CITATION
    words = [w for w in _words(first) if w not in known]
    if not words:
        return 0.0
    passages = set(_words(r.passages))
    return sum(w in passages for w in words) / len(words)


@_feature("retrieval", "passages in the prompt")
def _retrieved(e: Evidence) -> float:
    return float(len(e.retrieval.scores)) if e.retrieval is not None else 0.0
