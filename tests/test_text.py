"""Streamed text: stop sequences that span tokens, and UTF-8 split across tokens."""

from __future__ import annotations

import random

import pytest

from ridgeline_core.runtime.text import StopMatcher, Utf8Stream


def run(matcher: StopMatcher, pieces: list[str]) -> tuple[str, str | None, list[str]]:
    """Feed pieces until a stop hits; return (emitted text, stop, each emitted piece)."""
    emitted: list[str] = []
    for piece in pieces:
        text, stop = matcher.feed(piece)
        emitted.append(text)
        if stop is not None:
            return "".join(emitted), stop, emitted
    text, stop = matcher.feed("", final=True)
    emitted.append(text)
    return "".join(emitted), stop, emitted


# -- StopMatcher ----------------------------------------------------------------------


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("Hello") == ("Hello", None)
    assert matcher.feed(" wor") == (" wor", None)
    assert matcher.feed("", final=True) == ("", None)


def test_stop_inside_one_piece() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("Answer: 4###Question") == ("Answer: 4", "###")


def test_stop_at_the_very_start() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("<|im_end|>more") == ("", "<|im_end|>")


def test_stop_spanning_several_feeds_is_never_emitted() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("Paris<|") == ("Paris", None)
    assert matcher.feed("im") == ("", None)
    assert matcher.feed("_en") == ("", None)
    assert matcher.feed("d|> trailing") == ("", "<|im_end|>")


def test_stop_split_one_character_per_feed() -> None:
    stop = "\nQuestion:"
    text = "The answer is 4." + stop + " What"
    emitted, hit, pieces = run(StopMatcher([stop, "\n\n"]), list(text))
    assert emitted == "The answer is 4."
    assert hit == stop
    assert all("\n" not in piece for piece in pieces)


def test_earliest_of_several_stops_wins() -> None:
    for stops in (["\n\n", "Question:"], ["Question:", "\n\n"]):
        matcher = StopMatcher(stops)
        assert matcher.feed("A: 4\nQuestion: next\n\nmore") == ("A: 4\n", "Question:")


def test_earliest_stop_wins_across_feeds() -> None:
    matcher = StopMatcher(["END", "STOP"])
    assert matcher.feed("done ST") == ("done ", None)
    assert matcher.feed("OP and END") == ("", "STOP")


def test_held_text_is_released_when_it_stops_matching() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("a#") == ("a", None)
    assert matcher.feed("#") == ("", None)
    assert matcher.feed("b") == ("##b", None)
    assert matcher.feed("", final=True) == ("", None)


def test_held_text_released_partly_when_a_shorter_prefix_still_matches() -> None:
    matcher = StopMatcher(["aab"])
    assert matcher.feed("aa") == ("", None)
    assert matcher.feed("a") == ("a", None)  # "aaa": only the last "aa" may still start it
    assert matcher.feed("b") == ("", "aab")


def test_end_of_stream_releases_held_text() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("bye </") == ("bye ", None)
    assert matcher.feed("", final=True) == ("</", None)
    assert matcher.feed("", final=True) == ("", None)


def test_a_longer_stop_at_the_same_place_is_waited_for() -> None:
    matcher = StopMatcher(["\n", "\nQuestion:"])
    assert matcher.feed("4\n") == ("4", None)
    assert matcher.feed("Quest") == ("", None)
    assert matcher.feed("ion: more") == ("", "\nQuestion:")


def test_a_shorter_stop_wins_once_the_longer_one_fails() -> None:
    matcher = StopMatcher(["\n", "\nQuestion:"])
    assert matcher.feed("4\nQu") == ("4", None)
    assert matcher.feed("ite") == ("", "\n")


def test_a_stop_completed_by_the_end_of_stream_still_counts() -> None:
    matcher = StopMatcher(["ab", "abc"])
    assert matcher.feed("xab") == ("x", None)  # "abc" may still follow
    assert matcher.feed("", final=True) == ("", "ab")


def test_nothing_is_lost_without_a_stop() -> None:
    matcher = StopMatcher(["<|im_end|>", "\n\n"])
    pieces = ["Hel", "lo <", "|im", "_e", "nd>", " no\n", "x"]
    emitted, hit, _ = run(matcher, pieces)
    assert hit is None
    assert emitted == "".join(pieces)


def test_empty_stop_strings_are_ignored() -> None:
    assert StopMatcher([""]).feed("text") == ("text", None)
    assert StopMatcher(["", ""]).feed("text") == ("text", None)
    matcher = StopMatcher(["", "END"])
    assert matcher.feed("text") == ("text", None)
    assert matcher.feed(" END") == (" ", "END")


def test_duplicate_stops_are_harmless() -> None:
    matcher = StopMatcher(["##", "##"])
    assert matcher.feed("a#") == ("a", None)
    assert matcher.feed("#b") == ("", "##")


def test_overlapping_stops_do_not_depend_on_the_split() -> None:
    """With stops that contain each other: the earliest start wins, the longest there."""
    rng = random.Random(7)
    for _ in range(3000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 3))) for _ in range(3)]
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        expected: tuple[str, str | None] = (text, None)
        for start in range(len(text)):
            here = [s for s in stops if text.startswith(s, start)]
            if here:
                expected = (text[:start], max(here, key=len))
                break
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 5))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        emitted, hit, _ = run(StopMatcher(stops), pieces)
        assert (emitted, hit) == expected, (stops, text, pieces)


def test_matcher_is_independent_of_how_text_is_split() -> None:
    """Streaming gives what a single pass over the whole text would."""
    stops = ["\n\nQ:", "<|im_end|>", "###"]
    alphabet = list("ab \n#Q:<|im_end>")
    rng = random.Random(1234)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        if rng.random() < 0.5:
            text += rng.choice(stops) + "tail"
        found = [(text.find(s), s) for s in stops if s in text]
        expected_hit = min(found)[1] if found else None
        expected = text[: text.find(expected_hit)] if expected_hit else text
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 12))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        emitted, hit, _ = run(StopMatcher(stops), pieces)
        assert (emitted, hit) == (expected, expected_hit), (text, pieces)


# -- Utf8Stream -----------------------------------------------------------------------


def test_ascii_passes_through() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"hello") == "hello"
    assert stream.flush() == ""


def test_two_byte_character_split_across_feeds() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"caf\xc3") == "caf"
    assert stream.feed(b"\xa9!") == "\u00e9!"


def test_four_byte_character_one_byte_per_feed() -> None:
    stream = Utf8Stream()
    encoded = "\U0001f600".encode()
    assert [stream.feed(encoded[i : i + 1]) for i in range(4)] == ["", "", "", "\U0001f600"]
    assert stream.flush() == ""


@pytest.mark.parametrize("text", ["Grüße, 世界! \U0001f600 ok", "a\u0301\u200d\U0001f9d1\u200d"])
def test_any_byte_split_reassembles(text: str) -> None:
    data = text.encode()
    for size in (1, 2, 3, 5):
        stream = Utf8Stream()
        out = "".join(stream.feed(data[i : i + size]) for i in range(0, len(data), size))
        assert out + stream.flush() == text


def test_invalid_bytes_are_replaced() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"a\xffb") == "a\ufffdb"
    assert stream.feed(b"\xc3(") == "\ufffd("  # a lead byte followed by a non-continuation


def test_truncated_character_at_end_is_dropped_on_flush() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"ok \xe2\x82") == "ok "
    assert stream.flush() == ""  # a cut character is not U+FFFD (issue 16, compat 6)
    assert stream.feed(b"next") == "next"  # usable after flush
