"""The confidence probes answered together from kept frame states (llama_short): the same
answers as evaluating each probe from scratch, alone, or through the model's own
generation path, token for token at temperature 0."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.confidence.features import (
    SAMPLES,
    SHORT_PROBE_TOKENS,
    SHORT_PROBES,
    Evidence,
    probe_prompt,
    run_probes,
    short_answers,
)
from ridgeline_core.errors import PromptTooLongError
from ridgeline_core.runtime import (
    Runtime,
    SamplingParams,
    ShortAnswerRuntime,
    ShortGeneration,
)
from ridgeline_core.runtime.llama_short import common_prefix

pytestmark = pytest.mark.model

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a cat have?",
    "Who wrote War and Peace?",
    "A recipe needs 2 eggs per cake. How many eggs do I need for 4 cakes?",
    "Which is colder, ice or steam?",
    "What is the fastest land animal?",
    "Is the Pacific the largest ocean?",
]
PROBES = sorted(SHORT_PROBES)


def _ask(runtime: Any, question: str, **options: Any) -> list[ShortGeneration]:
    prompts = [probe_prompt(probe, question) for probe in PROBES]
    answers: list[ShortGeneration] = runtime.short_answers(
        prompts, max_tokens=SHORT_PROBE_TOKENS, **options
    )
    return answers


def _same(a: list[ShortGeneration], b: list[ShortGeneration]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens and x.text == y.text
        assert x.signals == pytest.approx(y.signals, abs=1e-6)


def test_kept_frames_answer_as_a_fresh_evaluation(smollm2: Runtime) -> None:
    assert isinstance(smollm2, ShortAnswerRuntime)
    kept = [_ask(smollm2, q) for q in QUESTIONS]
    fresh = [_ask(smollm2, q, fresh=True) for q in QUESTIONS]
    for a, b in zip(kept, fresh, strict=True):
        _same(a, b)
    # after a call, each frame's state is kept: the next evaluates only the question
    again = _ask(smollm2, QUESTIONS[0])
    vocab = smollm2._vocab  # type: ignore[attr-defined]
    for probe, answer in zip(PROBES, again, strict=True):
        frame, asked = probe_prompt(probe, QUESTIONS[0])
        shared = common_prefix(
            vocab.tokenize(frame, True, False), vocab.tokenize(frame + asked, True, False)
        )
        assert answer.kept_tokens == shared > 30  # the frame, less a merged last token
    assert all(a.prompt_tokens > a.kept_tokens for a in again)
    first = _ask(smollm2, QUESTIONS[1], fresh=True)
    assert [a.kept_tokens for a in first] == [0, 0, 0]


def test_batched_answers_equal_one_at_a_time(smollm2: Runtime) -> None:
    for question in QUESTIONS:
        _same(_ask(smollm2, question), _ask(smollm2, question, together=False))


def test_batched_answers_equal_the_models_own_generation(smollm2: Runtime) -> None:
    """The probe context answers as the model's main context does through complete()."""
    params = SamplingParams(max_tokens=SHORT_PROBE_TOKENS, temperature=0.0, stop=("\n",))
    for question in QUESTIONS:
        for probe, answer in zip(PROBES, _ask(smollm2, question), strict=True):
            frame, asked = probe_prompt(probe, question)
            with smollm2.complete(frame + asked, params, control_tokens=False) as stream:
                tokens = list(stream)
            assert answer.tokens == tuple(t.id for t in tokens if t.id is not None)
            assert answer.text == "".join(t.text for t in tokens).strip()


def test_a_prompt_longer_than_the_probe_context_uses_the_model_context(
    smollm2: Runtime,
) -> None:
    long = "Please consider the following. " * 120 + "What is the capital of France?"
    with pytest.raises(PromptTooLongError):
        _ask(smollm2, long)
    found, _ = short_answers(smollm2, long, PROBES)  # falls back to one generation each
    assert set(found) == set(PROBES)
    evidence = run_probes(smollm2, Evidence(QUESTIONS[0], ("Paris",), ()), {"short"})
    assert evidence.shorts["short"].text  # and the probe context still works after


def test_sequential_and_batched_probe_features_agree(smollm2: Runtime) -> None:
    """The path other runtimes take (one complete() per probe) gives the same evidence."""
    for question in QUESTIONS[:4]:
        batched, _ = short_answers(smollm2, question, PROBES)
        alone, _ = short_answers(smollm2, question, PROBES, batched=False)
        for probe in PROBES:
            assert batched[probe].text == alone[probe].text
            assert batched[probe].signals == pytest.approx(alone[probe].signals, abs=1e-6)
        assert len({a.seconds for a in batched.values()}) == 1  # one batch, one time


def test_samples_continue_the_first_prompt_and_repeat_with_their_seed(smollm2: Runtime) -> None:
    runtime: Any = smollm2
    prompts = [probe_prompt(probe, QUESTIONS[3]) for probe in PROBES]
    ask = {"max_tokens": SHORT_PROBE_TOKENS, "samples": 3, "temperature": 0.8}
    answers = runtime.short_answers(prompts, seed=7, **ask)
    assert len(answers) == 6
    # the greedy answers are those without samples; the samples start from the first prompt
    _same(answers[:3], _ask(smollm2, QUESTIONS[3]))
    assert all(a.prompt_tokens == answers[0].prompt_tokens for a in answers[3:])
    # the same seed gives the same samples: from kept frames, fresh, or one prompt at a time
    for options in ({}, {"fresh": True}, {"together": False}):
        _same(answers, runtime.short_answers(prompts, seed=7, **ask, **options))
    # the sampled answers differ from the greedy one somewhere in the questions
    texts = set()
    for question in QUESTIONS:
        found = runtime.short_answers([probe_prompt("short", question)], seed=1, **ask)
        texts.update((question, a.text) for a in found)
    assert len(texts) > len(QUESTIONS)


def test_the_samples_probe_gives_features_on_every_runtime_path(smollm2: Runtime) -> None:
    evidence = Evidence(QUESTIONS[0], ("The capital of France is Paris.",), ())
    batched = run_probes(smollm2, evidence, {"samples"})
    assert len(batched.samples) == SAMPLES and "short" in batched.shorts
    again = run_probes(smollm2, evidence, {"samples"})
    assert [a.text for a in again.samples] == [a.text for a in batched.samples]  # seeded
    _, alone = short_answers(smollm2, QUESTIONS[0], ["short"], samples=3, batched=False)
    assert len(alone) == 3 and all(a.text for a in alone)  # complete() with a seed


def test_more_frames_than_kept_and_bad_requests(smollm2: Runtime) -> None:
    runtime: Any = smollm2
    frames = [(f"Answer briefly, in style {i}.\n\n", "Q: What is 2 plus 2?\nA:") for i in range(10)]
    kept = [runtime.short_answers([frame], max_tokens=6)[0] for frame in frames]
    fresh = [runtime.short_answers([frame], max_tokens=6, fresh=True)[0] for frame in frames]
    _same(kept, fresh)  # ten frames through eight kept sequences: still the fresh answers
    with pytest.raises(ValueError, match="its own prefix"):
        runtime.short_answers([frames[0], frames[0]], max_tokens=4)
    with pytest.raises(ValueError, match="samples must be"):
        runtime.short_answers([frames[0]], max_tokens=4, samples=9)
    assert _ask(smollm2, QUESTIONS[0])[0].text  # and the probes still work after
