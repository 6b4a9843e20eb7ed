"""Confidence features: everything the agent knows about a local answer, as named numbers.

A local answer leaves *evidence*: the prompt, the answer's tokens with their signals, the
end-of-generation token's signals, and the results of optional *probes* that cost extra
model time. Each feature is a pure function of the evidence; a calibrated confidence model
(``edge_agent.confidence.calibrated``) names the features it was fitted on, and the agent runs only
the probes those features need.

Groups (README "How confidence is computed" has the measured value of each):

* ``whole``: aggregates over the whole reply (the v0 scorers, length, end-of-text).
* ``span``: the answer span. A chat reply puts its answer in the first sentence, and the
  words it copies from the question say nothing about whether it is right; so the span is
  the first sentence, and its *content* tokens are those with a word that is neither in
  the prompt nor a stop word.
* ``probe``: the ``short`` probe asks the same model the same question again in a
  few-shot "Q: ... A:" form that makes it answer in a few words; agreement between that
  short answer and the chat reply is self-consistency at the cost of one short
  generation.
* ``consistency``: two more short probes (``short2``, ``short3``) in other few-shot
  frames; whether their answers occur in the reply, and agree with each other.
* ``sampled``: the ``samples`` probe answers the ``short`` frame twice more,
  sampled at temperature 0.8 (seeded by the question); how often those answers agree with
  the reply and with each other is self-consistency at the cost of their tokens alone.
* ``selfcheck``: the ``selfcheck`` probe asks the model whether its reply is correct and
  reads P(yes) from one forward pass (P(True)).
* ``prompt``: what the question is (arithmetic, yes/no, how many, ...): the model is far
  better at some kinds than others.
* ``retrieval``: for an answer from local knowledge, how well the passages match the
  question, how clearly one collection won, and whether the answer's words are in the
  passages (:mod:`.retrieval_features`).
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ridgeline_core.errors import PromptTooLongError
from ridgeline_core.runtime import (
    ChatMessage,
    Runtime,
    SamplingParams,
    ShortAnswerRuntime,
    TokenSignals,
)

from ..evaluation.matcher import is_correct, normalise
from . import scorers as confidence
from .scorers import geometric_mean

__all__ = [
    "FEATURES",
    "PROBES",
    "SHORT_PROBES",
    "Evidence",
    "Feature",
    "RetrievalEvidence",
    "ShortAnswer",
    "feature_values",
    "probe_prompt",
    "probes_for",
    "run_probes",
    "short_answers",
]

_STOP_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "is",
        "are",
        "was",
        "were",
        "of",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "for",
        "by",
        "with",
        "it",
        "its",
        "this",
        "that",
        "as",
        "be",
        "from",
        "which",
        "what",
        "who",
        "how",
        "many",
        "much",
        "does",
        "do",
        "did",
        "can",
    ]
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?\n]")
_YES_NO_START = re.compile(
    r"\s*(is|are|can|does|do|did|was|were|has|have|will|should|could|would)\b", re.IGNORECASE
)
_ARITHMETIC = re.compile(
    r"\d\s*(times|plus|minus|divided|multiplied|\*|\+|-|/|x)\s*(by\s*)?\d", re.IGNORECASE
)

# The short probes: few-shot frames that make the model answer in a few words. Three
# different frames, so that agreement among them (and with the chat reply) measures how
# consistently the model knows the answer; each is one short generation.
SHORT_PROBES: dict[str, tuple[str, str]] = {
    "short": (
        "Answer each question with a few words.\n\n"
        "Q: What is the capital of Japan?\nA: Tokyo\n\n"
        "Q: How many legs does a spider have?\nA: 8\n\n"
        "Q: Is the Moon larger than the Earth?\nA: No\n\n",
        "Q: {question}\nA:",
    ),
    "short2": (
        "Give short answers.\n\n"
        "Question: Which planet is closest to the Sun?\nAnswer: Mercury\n\n"
        "Question: What is 6 plus 7?\nAnswer: 13\n\n"
        "Question: Can fish breathe air?\nAnswer: No\n\n",
        "Question: {question}\nAnswer:",
    ),
    "short3": (
        "Q: Who wrote Hamlet?\nA: William Shakespeare\n\n"
        "Q: How many minutes are in an hour?\nA: 60\n\n"
        "Q: Is water wet?\nA: Yes\n\n",
        "Q: {question}\nA:",
    ),
}
SHORT_PROBE_TOKENS = 12
# The "samples" probe: two more answers to the "short" frame, sampled (seeded by the question,
# so the same question gets the same samples); how often they agree with the reply
# measures how sure the model is, for their tokens alone (they share the frame's prompt).
SAMPLES = 2
SAMPLE_TEMPERATURE = 0.8
SELF_CHECK_PROMPT = (
    "Question: {question}\nProposed answer: {answer}\n"
    "Is the proposed answer correct? Answer yes or no."
)


@dataclass(frozen=True)
class ShortAnswer:
    text: str
    signals: tuple[TokenSignals, ...]
    seconds: float  # the model time of the probes that ran with it (one batch)


@dataclass(frozen=True)
class RetrievalEvidence:
    """What retrieval left for an answer from local knowledge."""

    scores: tuple[float, ...]  # the passages' similarities to the question, best first
    expert_scores: tuple[float, ...]  # each collection's best similarity, best first
    experts_chosen: int
    passages: str  # the passages' text, as the model read it


@dataclass(frozen=True)
class Evidence:
    """What one local answer left behind; probes are None when they did not run."""

    prompt: str
    pieces: tuple[str, ...]  # text of each answer token (aligned with ``signals``)
    signals: tuple[TokenSignals, ...]
    eog: TokenSignals | None = None  # the end-of-generation token, when the answer ended
    shorts: dict[str, ShortAnswer] = field(default_factory=dict)  # by probe name
    p_true: float | None = None
    retrieval: RetrievalEvidence | None = None  # an answer from local knowledge
    samples: tuple[ShortAnswer, ...] = ()  # sampled answers in the "short" frame

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    needs: tuple[str, ...]  # the probes it reads
    compute: Callable[[Evidence], float]
    description: str


FEATURES: dict[str, Feature] = {}


def _feature(
    group: str, description: str, *needs: str
) -> Callable[[Callable[[Evidence], float]], Callable[[Evidence], float]]:
    def register(function: Callable[[Evidence], float]) -> Callable[[Evidence], float]:
        name = function.__name__.strip("_")
        FEATURES[name] = Feature(name, group, needs, function, description)
        return function

    return register


def _mean(values: Sequence[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _sentence(e: Evidence) -> int:
    """Tokens in the first sentence (the whole reply when it has one sentence)."""
    for index, piece in enumerate(e.pieces):
        if index > 0 and _SENTENCE_END.search(piece):
            return index + 1
    return len(e.pieces)


def _content(e: Evidence) -> list[TokenSignals]:
    """Signals of the first sentence's tokens that carry a word not in the prompt."""
    known = set(_words(e.prompt)) | _STOP_WORDS
    n = _sentence(e)
    return [
        signals
        for piece, signals in zip(e.pieces[:n], e.signals[:n], strict=True)
        if (words := _words(piece)) and not all(word in known for word in words)
    ]


# -- whole reply -------------------------------------------------------------------------


# The v0 scorers (edge_agent.confidence.scorers) over the whole reply.


@_feature("whole", "mean top-1 minus top-2 probability over the reply")
def _margin(e: Evidence) -> float:
    return confidence.margin(e.signals)


@_feature("whole", "geometric mean token probability over the reply")
def _geomean_prob(e: Evidence) -> float:
    return confidence.geomean(e.signals)


@_feature("whole", "least probable token of the reply")
def _min_prob(e: Evidence) -> float:
    return confidence.minimum(e.signals)


@_feature("whole", "geometric mean of the lowest 20% of token probabilities")
def _tail_prob(e: Evidence) -> float:
    return confidence.tail(e.signals)


@_feature("whole", "minus the mean entropy of the next-token distribution")
def _neg_entropy(e: Evidence) -> float:
    return -_mean([s.entropy for s in e.signals], 0.0)


@_feature("whole", "log(1 + reply tokens)")
def _log_length(e: Evidence) -> float:
    return math.log1p(len(e.signals))


@_feature("whole", "probability of the end-of-text token (0 when cut off)")
def _eog_prob(e: Evidence) -> float:
    return e.eog.prob if e.eog is not None else 0.0


# -- answer span -------------------------------------------------------------------------


@_feature("span", "probability of the reply's first token")
def _first_prob(e: Evidence) -> float:
    return e.signals[0].prob if e.signals else 0.0


@_feature("span", "margin of the reply's first token")
def _first_margin(e: Evidence) -> float:
    return e.signals[0].margin if e.signals else 0.0


@_feature("span", "mean margin over the first sentence")
def _sentence_margin(e: Evidence) -> float:
    return _mean([s.margin for s in e.signals[: _sentence(e)]], 0.0)


@_feature("span", "least token probability in the first sentence")
def _sentence_min(e: Evidence) -> float:
    return min((s.prob for s in e.signals[: _sentence(e)]), default=0.0)


@_feature("span", "geometric mean token probability of the first sentence")
def _sentence_geomean(e: Evidence) -> float:
    return geometric_mean([s.prob for s in e.signals[: _sentence(e)]])


@_feature("span", "least probability among the first sentence's new words")
def _span_min(e: Evidence) -> float:
    return min((s.prob for s in _content(e)), default=1.0)


@_feature("span", "geometric mean probability of the first sentence's new words")
def _span_geomean(e: Evidence) -> float:
    content = _content(e)
    return geometric_mean([s.prob for s in content]) if content else 1.0


@_feature("span", "probability of the first new word")
def _span_first(e: Evidence) -> float:
    content = _content(e)
    return content[0].prob if content else 1.0


@_feature("span", "margin of the first new word")
def _span_first_margin(e: Evidence) -> float:
    content = _content(e)
    return content[0].margin if content else 1.0


@_feature("span", "mean margin over the first sentence's new words")
def _span_margin(e: Evidence) -> float:
    return _mean([s.margin for s in _content(e)], 1.0)


# -- short-answer probes ----------------------------------------------------------------


def _short(e: Evidence, probe: str = "short") -> ShortAnswer:
    try:
        return e.shorts[probe]
    except KeyError:
        raise ValueError(f"this feature needs the {probe!r} probe, which did not run") from None


def _equal_pairs(answers: Sequence[ShortAnswer]) -> list[bool]:
    """For each pair of ``answers``, whether their normalised texts are equal."""
    texts = [normalise(a.text) for a in answers]
    return [a == b for i, a in enumerate(texts) for b in texts[i + 1 :]]


def _agrees(reply: str, short: ShortAnswer) -> float:
    text = normalise(short.text)
    return float(bool(text) and is_correct(reply, [text]))


@_feature("probe", "geometric mean token probability of the short answer", "short")
def _short_geomean(e: Evidence) -> float:
    return geometric_mean([s.prob for s in _short(e).signals])


@_feature("probe", "least token probability of the short answer", "short")
def _short_min(e: Evidence) -> float:
    return min((s.prob for s in _short(e).signals), default=0.0)


@_feature("probe", "probability of the short answer's first token", "short")
def _short_first(e: Evidence) -> float:
    signals = _short(e).signals
    return signals[0].prob if signals else 0.0


@_feature("probe", "mean margin of the short answer", "short")
def _short_margin(e: Evidence) -> float:
    return _mean([s.margin for s in _short(e).signals], 0.0)


@_feature("probe", "1 when the short answer occurs in the reply", "short")
def _agree(e: Evidence) -> float:
    return _agrees(e.text, _short(e))


@_feature("probe", "1 when every number of the short answer is in the reply", "short")
def _numbers_agree(e: Evidence) -> float:
    short = set(re.findall(r"\d+", _short(e).text.replace(",", "")))
    return float(bool(short) and short <= set(re.findall(r"\d+", e.text.replace(",", ""))))


@_feature("probe", "log(1 + short answer tokens)", "short")
def _short_length(e: Evidence) -> float:
    return math.log1p(len(_short(e).signals))


@_feature("consistency", "1 when the second frame's short answer occurs in the reply", "short2")
def _agree2(e: Evidence) -> float:
    return _agrees(e.text, _short(e, "short2"))


@_feature("consistency", "1 when the third frame's short answer occurs in the reply", "short3")
def _agree3(e: Evidence) -> float:
    return _agrees(e.text, _short(e, "short3"))


@_feature("consistency", "geometric mean token probability, second frame", "short2")
def _short2_geomean(e: Evidence) -> float:
    return geometric_mean([s.prob for s in _short(e, "short2").signals])


@_feature("consistency", "geometric mean token probability, third frame", "short3")
def _short3_geomean(e: Evidence) -> float:
    return geometric_mean([s.prob for s in _short(e, "short3").signals])


@_feature(
    "consistency", "pairs of the three short answers that are equal", "short", "short2", "short3"
)
def _short_pairs(e: Evidence) -> float:
    return float(sum(_equal_pairs([_short(e, p) for p in ("short", "short2", "short3")])))


# -- sampled answers ---------------------------------------------------------------------


def _samples(e: Evidence) -> tuple[ShortAnswer, ...]:
    if not e.samples:
        raise ValueError("this feature needs the 'samples' probe, which did not run")
    return e.samples


@_feature("sampled", "share of the sampled short answers that occur in the reply", "samples")
def _sample_agree(e: Evidence) -> float:
    return _mean([_agrees(e.text, sample) for sample in _samples(e)], 0.0)


@_feature(
    "sampled", "share of equal pairs among the short answer and its samples", "short", "samples"
)
def _sample_pairs(e: Evidence) -> float:
    return _mean([float(p) for p in _equal_pairs([_short(e), *_samples(e)])], 0.0)


# -- self-check probe --------------------------------------------------------------------


@_feature("selfcheck", "log-odds the model gives 'yes, my reply is correct'", "selfcheck")
def _p_true_logit(e: Evidence) -> float:
    if e.p_true is None:
        raise ValueError("this feature needs the 'selfcheck' probe, which did not run")
    p = min(max(e.p_true, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


# -- prompt ------------------------------------------------------------------------------


@_feature("prompt", "numbers in the prompt")
def _prompt_numbers(e: Evidence) -> float:
    return float(len(re.findall(r"\d+", e.prompt)))


@_feature("prompt", "1 for a yes/no question")
def _prompt_yes_no(e: Evidence) -> float:
    return float(bool(_YES_NO_START.match(e.prompt)))


@_feature("prompt", "1 for 'how many' / 'how much'")
def _prompt_how_many(e: Evidence) -> float:
    text = e.prompt.lower()
    return float("how many" in text or "how much" in text)


@_feature("prompt", "1 for arithmetic between two numbers")
def _prompt_arithmetic(e: Evidence) -> float:
    return float(bool(_ARITHMETIC.search(e.prompt)))


@_feature("prompt", "log of the prompt's words")
def _prompt_words(e: Evidence) -> float:
    return math.log(max(1, len(e.prompt.split())))


@_feature("prompt", "1 for a 'what' question")
def _prompt_what(e: Evidence) -> float:
    return float(e.prompt.lstrip().lower().startswith("what"))


@_feature("prompt", "1 for a 'who' or 'which' question")
def _prompt_who(e: Evidence) -> float:
    return float(e.prompt.lstrip().lower().startswith(("who", "which")))


# -- probes ------------------------------------------------------------------------------

PROBES = (*SHORT_PROBES, "samples", "selfcheck")


def probes_for(features: Sequence[str]) -> set[str]:
    """The probes that must run to compute ``features`` (unknown names raise KeyError)."""
    needs: set[str] = set()
    for name in features:
        try:
            feature = FEATURES[name]
        except KeyError:
            known = ", ".join(sorted(FEATURES))
            raise KeyError(f"unknown confidence feature {name!r} (known: {known})") from None
        needs.update(feature.needs)
    return needs


def run_probes(runtime: Runtime, evidence: Evidence, probes: set[str]) -> Evidence:
    """Evidence with the asked probes' results added (each costs model time)."""
    shorts, samples = dict(evidence.shorts), evidence.samples
    wanted = [probe for probe in sorted(probes & set(SHORT_PROBES)) if probe not in shorts]
    sampling = "samples" in probes and not samples
    if sampling and "short" not in wanted:
        wanted.insert(0, "short")  # the samples continue the short frame's prompt
    if wanted:
        found, sampled = short_answers(
            runtime, evidence.prompt, wanted, samples=SAMPLES if sampling else 0
        )
        shorts = {**found, **shorts}
        samples = samples or sampled
    p_true = evidence.p_true
    if "selfcheck" in probes and p_true is None:
        p_true = _self_check(runtime, evidence.prompt, evidence.text)
    return replace(evidence, shorts=shorts, samples=samples, p_true=p_true)


def probe_prompt(probe: str, prompt: str) -> tuple[str, str]:
    """A short probe's (frame, question) text for ``prompt`` (put on one line)."""
    frame, question = SHORT_PROBES[probe]
    return frame, question.format(question=" ".join(prompt.split()))


def short_answers(
    runtime: Runtime, prompt: str, probes: Sequence[str], *, samples: int = 0, batched: bool = True
) -> tuple[dict[str, ShortAnswer], tuple[ShortAnswer, ...]]:
    """The short probes' answers, and ``samples`` sampled answers in the first probe's
    frame: in one batch from the frames' kept states where the runtime can (llama.cpp;
    ``batched``), else one generation each from the whole prompt. ``seconds`` is the
    time of all of them."""
    started = time.perf_counter()
    seed = zlib.crc32(" ".join(prompt.split()).encode("utf-8")) & 0x7FFFFFFF
    if batched and isinstance(runtime, ShortAnswerRuntime):
        try:
            answers = runtime.short_answers(
                [probe_prompt(probe, prompt) for probe in probes], max_tokens=SHORT_PROBE_TOKENS,
                samples=samples, temperature=SAMPLE_TEMPERATURE, seed=seed,
            )  # fmt: skip
        except PromptTooLongError:  # longer than the probe context: the model's own
            pass
        else:
            seconds = time.perf_counter() - started
            found = [ShortAnswer(a.text, a.signals, seconds) for a in answers]
            return dict(zip(probes, found, strict=False)), tuple(found[len(probes) :])
    greedy = SamplingParams(max_tokens=SHORT_PROBE_TOKENS, temperature=0.0, stop=("\n",))
    found = [_short_probe(runtime, prompt, probe, greedy) for probe in probes]
    for index in range(samples):
        sampled = replace(greedy, temperature=SAMPLE_TEMPERATURE, seed=seed + index)
        found.append(_short_probe(runtime, prompt, probes[0], sampled))
    seconds = time.perf_counter() - started
    found = [replace(answer, seconds=seconds) for answer in found]
    return dict(zip(probes, found, strict=False)), tuple(found[len(probes) :])


def _short_probe(runtime: Runtime, prompt: str, probe: str, params: SamplingParams) -> ShortAnswer:
    frame, question = probe_prompt(probe, prompt)
    pieces: list[str] = []
    signals: list[TokenSignals] = []
    # the prompt is someone else's text: its "<|im_end|>" stays text (the frame has none)
    with runtime.complete(frame + question, params, control_tokens=False) as stream:
        for token in stream:
            pieces.append(token.text)
            if token.signals is not None:
                signals.append(token.signals)
    return ShortAnswer("".join(pieces).strip(), tuple(signals), 0.0)


def _self_check(runtime: Runtime, prompt: str, answer: str) -> float:
    text = SELF_CHECK_PROMPT.format(question=prompt.strip(), answer=answer.strip())
    yes, no = runtime.next_token_probs([ChatMessage("user", text)], ["Yes", "No"])
    return yes / (yes + no) if yes + no > 0 else 0.5


def feature_values(evidence: Evidence, names: Sequence[str]) -> list[float]:
    """The named features of ``evidence``, in order (each finite)."""
    values = []
    for name in names:
        value = float(FEATURES[name].compute(evidence))
        if not math.isfinite(value):
            raise ValueError(f"confidence feature {name} is not finite ({value})")
        values.append(value)
    return values


from . import retrieval_features as _retrieval_features  # noqa: E402, F401  (registers them)
