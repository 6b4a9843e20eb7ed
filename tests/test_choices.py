"""Answers limited to choices: the limits, the GBNF grammar and its escaping, the holder
that never releases text outside the set, and the llama.cpp runtime writing a choice with
the real SmolLM2 (the broker end to end is in test_broker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridgeline_core.errors import InvalidRequestError, ModelError, PromptTooLongError
from ridgeline_core.runtime import (
    ChatMessage,
    FinishReason,
    LoadOptions,
    Runtime,
    SamplingParams,
    load_runtime,
)
from ridgeline_core.runtime.choices import (
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    ChoiceHolder,
    check_choices,
    choices_grammar,
    gbnf_literal,
    longest_choice_bytes,
)
from ridgeline_core.store import ModelManifest

LABELS = ("lights_on", "lights_off", "set_timer", "play_music", "weather")
# characters a GBNF string literal must escape, or that only survive as code points
AWKWARD = ('say "hi"', "back\\slash", "a b.c", "café", "日本語", "🙂 ok", "[x]|y*")


def classify(request: str) -> list[ChatMessage]:
    return [
        ChatMessage(
            "user",
            f"Classify the request into exactly one of: {', '.join(LABELS)}.\nRequest: {request}",
        )
    ]


# -- limits -----------------------------------------------------------------------------------


def test_valid_choices_pass_as_a_tuple() -> None:
    choices = ["x" * MAX_CHOICE_CHARS, *(str(i) for i in range(MAX_CHOICES - 1))]
    assert check_choices(choices) == tuple(choices)
    assert check_choices(list(AWKWARD)) == AWKWARD
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # emoji joined by ZWJ (format chars)
    assert check_choices([family, "\u00a0nbsp"]) == (family, "\u00a0nbsp")


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ([str(i) for i in range(MAX_CHOICES + 1)], "has 65 strings; at most 64"),
        (["a", ""], r"params.choices\[1\] is 0 characters; each choice must be 1-64"),
        (["a", "b" * 65], r"params.choices\[1\] is 65 characters"),
        (["a", "b", "a"], r"params.choices\[2\] 'a' is a duplicate"),
        (["line\nbreak"], "control character"),
        (["tab\there"], "control character"),
        (["nul\x00"], "control character"),
        (["del\x7f"], "control character"),
    ],
)
def test_invalid_choices_say_which_rule_they_break(choices: list[str], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_choices(choices, "params.choices")


# -- grammar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("lights_on", '"lights_on"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("a b.c [x]|y*", '"a b.c [x]|y*"'),  # GBNF operators mean nothing inside quotes
        ("café", '"caf\\u00E9"'),
        ("日本", '"\\u65E5\\u672C"'),
        ("🙂", '"\\U0001F642"'),
        ("\n\r\t\x7f\x01", '"\\n\\r\\t\\x7F\\x01"'),
    ],
)
def test_gbnf_literals_escape_what_the_grammar_parser_would_misread(
    text: str, literal: str
) -> None:
    assert gbnf_literal(text) == literal
    assert literal.isascii()


def test_the_grammar_is_one_alternative_per_choice() -> None:
    assert choices_grammar(["yes", "no", 'a"b']) == 'root ::= "yes" | "no" | "a\\"b"\n'
    with pytest.raises(ValueError):
        choices_grammar([])


def test_longest_choice_counts_utf8_bytes() -> None:
    assert longest_choice_bytes(["abc", "é", "🙂"]) == 4
    assert longest_choice_bytes(["abcde", "é"]) == 5


# -- holder -----------------------------------------------------------------------------------


def test_the_holder_releases_a_whole_choice_only_at_the_end() -> None:
    holder = ChoiceHolder(LABELS, "m")
    assert holder.feed("lights") == ("", None)
    assert holder.feed("_o") == ("", None)
    assert holder.feed("n") == ("", None)
    assert holder.feed("", final=True) == ("lights_on", None)


@pytest.mark.parametrize("text", ["lights", "lights_on ", " weather", "other"])
def test_the_holder_refuses_text_outside_the_set(text: str) -> None:
    holder = ChoiceHolder(LABELS, "m")
    holder.feed(text)
    with pytest.raises(ModelError, match="not one of the 5 choices"):
        holder.feed("", final=True)


# -- the llama.cpp runtime --------------------------------------------------------------------


@pytest.mark.model
def test_the_runtime_answers_one_label_with_signals(smollm2: Runtime) -> None:
    for request in ("Turn on the kitchen lights", "Set a timer for ten minutes", "Play jazz"):
        params = SamplingParams(choices=LABELS, max_tokens=1)  # max_tokens cuts no choice
        with smollm2.generate(classify(request), params) as stream:
            tokens = list(stream)
        text = "".join(token.text for token in tokens)
        assert text in LABELS, (request, text)
        assert stream.stats.finish_reason is FinishReason.STOP
        assert stream.stats.completion_tokens == len(tokens) >= 1
        assert all(token.signals is not None for token in tokens)
        assert stream.stats.eog_signals is not None


@pytest.mark.model
def test_the_runtime_is_repeatable_at_temperature_zero(smollm2: Runtime) -> None:
    # tokens only: llama-cpp-python re-evaluates a cached prompt's last token alone, and
    # logits from a batch of one differ from a full prompt batch in the last bits
    runs = []
    for _ in range(3):
        with smollm2.generate(classify("Switch the lamp off"), SamplingParams(choices=LABELS)) as s:
            runs.append([(t.id, t.text) for t in s])
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.model
@pytest.mark.parametrize("choice", AWKWARD)
def test_the_runtime_writes_awkward_choices_exactly(smollm2: Runtime, choice: str) -> None:
    """One choice: the grammar leaves the model no way but to write it, so any escaping
    mistake shows as different text (or a refused grammar)."""
    params = SamplingParams(choices=(choice,), stop=("a",))  # stop does not apply
    with smollm2.generate([ChatMessage("user", "Say something.")], params) as stream:
        assert stream.text == choice
    assert stream.stats.finish_reason is FinishReason.STOP


@pytest.mark.model
def test_the_runtime_samples_only_choices(smollm2: Runtime) -> None:
    answers = set()
    for seed in range(6):
        params = SamplingParams(choices=("red", "green", "re"), temperature=1.5, seed=seed)
        with smollm2.generate([ChatMessage("user", "Name a colour.")], params) as stream:
            answers.add(stream.text)
    assert answers <= {"red", "green", "re"}


@pytest.mark.model
def test_the_runtime_refuses_invalid_choices_before_generating(smollm2: Runtime) -> None:
    with pytest.raises(InvalidRequestError, match="duplicate"):
        smollm2.generate(classify("hi"), SamplingParams(choices=("a", "a")))


@pytest.mark.model
def test_llama_cpp_parses_the_grammar_of_every_printable_ascii_character(
    smollm2: Runtime,
) -> None:
    ascii_choices = [chr(code) for code in range(0x20, 0x7F)]  # 95 one-character choices
    build = smollm2._choices_grammar  # type: ignore[attr-defined]
    for start in range(0, len(ascii_choices), MAX_CHOICES):
        build(ascii_choices[start : start + MAX_CHOICES])
    build(["é", "€", "\U0001d518", "🙂", "\u00a0nbsp", "\ufb01", "\u03a9", "ß"])


@pytest.mark.model
def test_a_grammar_llama_cpp_refuses_is_an_error_not_a_crash(
    smollm2: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ridgeline_core.runtime import llama_cpp

    monkeypatch.setattr(llama_cpp, "choices_grammar", lambda _: 'root ::= "unterminated\n')
    with pytest.raises(ModelError, match="refused the choices grammar"):
        smollm2.generate(classify("hi"), SamplingParams(choices=("a",)))


@pytest.mark.model
def test_a_context_too_full_for_the_choice_is_a_prompt_too_long(
    smollm2_manifest: ModelManifest, smollm2_path: Path
) -> None:
    runtime = load_runtime(smollm2_manifest, smollm2_path, LoadOptions(n_ctx=256, n_threads=2))
    try:
        room = 2
        prompt = "a" + " a" * (runtime.context_length - room - 1)
        assert runtime.count_tokens(prompt) == runtime.context_length - room
        choice = "zq" * 32  # 64 characters no vocabulary writes in two tokens
        with (
            pytest.raises(PromptTooLongError, match="context holds"),
            runtime.complete(prompt, SamplingParams(choices=(choice,))) as stream,
        ):
            list(stream)
    finally:
        runtime.close()
