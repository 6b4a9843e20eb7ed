"""Local knowledge, the pure parts: reading sources, chunking, names, the privacy order,
the prompt with numbered passages and the citations an answer makes. No model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.knowledge.library import (
    AUTO,
    Passage,
    check_collection_name,
    cited,
    strictest,
    with_passages,
)
from edge_agent.knowledge.library.chunking import chunk_blocks
from edge_agent.knowledge.library.sources import Block, find_sources, read_source
from edge_agent.request.options import RequestOptions
from ridgeline_core.errors import InvalidRequestError
from ridgeline_core.runtime import ChatMessage

HTML = """<!doctype html><html><head><title>AL-7 Manual</title>
<style>p { color: red }</style><script>var secret = "not text";</script></head>
<body><h1>AL-7 Manual</h1><p>The filter is part <b>F-220</b>.</p>
<h2>Specifications</h2>
<table><tr><th>Weight</th><td>4.2 kg</td></tr><tr><th>Width</th><td>31&nbsp;cm</td></tr></table>
</body></html>"""

MARKDOWN = """# Handbook

Welcome to the company.

## Leave

Full-time staff get 27 days
of annual leave.

- carry over at most 5 days
- ask two weeks ahead

```
# not a heading
```

## Travel

Trains are booked by the office manager.
"""

TEXT = "SAFETY NOTES\n\nDo not open the case.\nIt is hot.\n\nRESET\n\nHold both buttons for 9 s.\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_markdown_headings_paragraphs_and_list_items(tmp_path: Path) -> None:
    source = read_source(write(tmp_path / "h.md", MARKDOWN), 1 << 20)
    assert source.kind == "markdown"
    assert Block("Leave", 2) in source.blocks
    assert Block("Full-time staff get 27 days of annual leave.") in source.blocks
    assert Block("- carry over at most 5 days") in source.blocks
    assert Block("not a heading", 1) not in source.blocks  # inside a code fence
    assert len(source.sha256) == 64 and source.size == len(MARKDOWN.encode())


def test_html_skips_script_and_style_and_reads_table_rows(tmp_path: Path) -> None:
    source = read_source(write(tmp_path / "m.html", HTML), 1 << 20)
    texts = [b.text for b in source.blocks]
    assert texts[0] == "AL-7 Manual" and texts.count("AL-7 Manual") == 1
    assert "The filter is part F-220." in texts
    assert "Weight | 4.2 kg" in texts and "Width | 31 cm" in texts
    assert not any("secret" in t or "color" in t for t in texts)


def test_plain_text_capital_lines_are_headings(tmp_path: Path) -> None:
    source = read_source(write(tmp_path / "n.txt", TEXT), 1 << 20)
    assert source.blocks == (
        Block("Safety Notes", 1),
        Block("Do not open the case. It is hot."),
        Block("Reset", 1),
        Block("Hold both buttons for 9 s."),
    )


def test_chunks_stay_in_their_section_and_under_the_limit() -> None:
    long = " ".join(f"Sentence number {i} says something." for i in range(60))
    blocks = [Block("Guide", 1), Block("Intro."), Block("Part A", 2), Block(long),
              Block("Part B", 2), Block("Short.")]  # fmt: skip
    chunks = chunk_blocks(blocks, 200)
    assert chunks[0].heading == "Guide" and chunks[0].text == "Intro."
    a = [c for c in chunks if c.heading == "Guide > Part A"]
    assert len(a) > 5 and all(len(c.text) <= 200 for c in a)
    assert " ".join(c.text for c in a) == long  # cut at sentence ends, nothing lost
    assert chunks[-1].heading == "Guide > Part B" and chunks[-1].text == "Short."
    assert chunks[-1].embedded_text() == "Guide > Part B\nShort."


def test_a_word_longer_than_a_chunk_is_cut() -> None:
    chunks = chunk_blocks([Block("x" * 450)], 200)
    assert [len(c.text) for c in chunks] == [200, 200, 50]


def test_directories_are_searched_and_hidden_files_left_out(tmp_path: Path) -> None:
    write(tmp_path / "a.md", "a")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.txt", "b")
    write(tmp_path / "sub" / "image.png", "not read")
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git" / "c.md", "hidden")
    found = find_sources([tmp_path])
    assert found == [tmp_path / "a.md", tmp_path / "sub" / "b.txt"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("report.pdf", b"%PDF-1.7", "not a PDF that can be read"),
        ("data.bin", b"\x00", "cannot read .bin"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8"),
        ("big.md", b"x" * 2048, "knowledge.max_file_bytes"),
    ],
)
def test_files_we_cannot_use_are_clear_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidRequestError, match=message) as caught:
        read_source(path, 1024)
    assert str(path) in str(caught.value)


def test_a_pdf_is_read_page_by_page_from_its_text_layer(tmp_path: Path) -> None:
    from pdf_file import pdf_bytes

    path = tmp_path / "notes.pdf"
    path.write_bytes(
        pdf_bytes([
            ["KESTREL NOTES", "The Tallow Street office has 14", "parking spaces (bikes: the yard)."],  # noqa: E501
            [],  # a page with no text is left out
            ["WARRANTY", "The warranty lasts 5 years."],
        ])
    )  # fmt: skip
    source = read_source(path, 1 << 20)
    assert source.kind == "pdf" and source.size == path.stat().st_size
    assert source.blocks == (
        Block("page 1", 1),
        Block("Kestrel Notes", 2),
        Block("The Tallow Street office has 14 parking spaces (bikes: the yard)."),
        Block("page 3", 1),
        Block("Warranty", 2),
        Block("The warranty lasts 5 years."),
    )
    chunks = chunk_blocks(list(source.blocks), 700)
    assert chunks[-1].embedded_text().startswith("page 3 > Warranty\n")
    assert find_sources([tmp_path]) == [path]


def test_pdfs_we_cannot_read_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from pdf_file import encrypted_pdf_bytes, pdf_bytes

    scanned = tmp_path / "scanned.pdf"
    scanned.write_bytes(pdf_bytes([[], []]))
    with pytest.raises(InvalidRequestError, match=r"no text in its 2 pages .*OCR"):
        read_source(scanned, 1 << 20)
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted_pdf_bytes("s3cret"))
    with pytest.raises(InvalidRequestError, match="needs a password"):
        read_source(locked, 1 << 20)
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(pdf_bytes([["SOME TEXT"]])[:200])
    with pytest.raises(InvalidRequestError, match=f"{cut}: not a PDF that can be read"):
        read_source(cut, 1 << 20)
    monkeypatch.setitem(sys.modules, "pypdf", None)  # the pdf extra not installed
    with pytest.raises(InvalidRequestError, match=r"needs pypdf: pip install 'ridgeline\[pdf\]'"):
        read_source(scanned, 1 << 20)


def test_a_missing_file_and_an_unreadable_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file or directory"):
        find_sources([tmp_path / "missing.md"])
    broken = tmp_path / "broken.md"
    os.symlink("/proc/self/mem", broken)  # a file whose read fails, even for root
    with pytest.raises(InvalidRequestError, match="cannot read it"):
        read_source(broken, 1 << 20)


@pytest.mark.parametrize("name", ["../etc", "a/b", "/abs", "Upper", "", "x" * 65, "a..b", AUTO])
def test_path_like_and_reserved_collection_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_collection_name(name)


def test_request_option_knowledge_is_checked() -> None:
    assert RequestOptions.parse({"knowledge": ["handbook", "auto"]}).knowledge == (
        "handbook",
        "auto",
    )
    assert RequestOptions.parse({"knowledge": "handbook"}).knowledge == ("handbook",)
    for bad in (["../x"], [5], [], ["a"] * 17):
        with pytest.raises(InvalidRequestError, match="collection") as caught:
            RequestOptions.parse({"knowledge": bad})
        assert caught.value.param == "knowledge"


def test_the_most_private_setting_holds() -> None:
    assert strictest(["allowed", "redacted", "question-only"]) == "question-only"
    assert strictest(["allowed", "never"]) == "never"
    assert strictest(["allowed"]) == "allowed"
    assert strictest([]) is None


def passage(text: str, heading: str = "Leave") -> Passage:
    return Passage("handbook", "/docs/leave.md", 0, heading, text, 0.8)


def test_passages_go_into_the_system_message_numbered_best_last() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "How many days?")]
    out = with_passages(messages, [passage("27 days."), passage("Ask early.", "")])
    assert out[1] == messages[1] and len(out) == 2  # the question as asked
    system = out[0].content
    assert system.startswith("Be brief.\n\n")
    assert system.index("[2] Ask early.") < system.index("[1] Leave: 27 days.")
    plain = [ChatMessage("user", "How many days?")]
    added = with_passages(plain, [passage("27 days.")])
    assert added[0].role == "system" and added[1:] == plain
    assert with_passages(messages, []) == messages


def test_citations_in_an_answer() -> None:
    assert cited("27 days [2], see also [1] and [2].", 3) == [2, 1]
    assert cited("No citation, [7] is out of range, [0] too.", 3) == []


def test_what_an_escalation_carries_under_each_setting() -> None:
    from edge_agent.knowledge.library.outbound import outbound
    from edge_agent.knowledge.redaction import Redactor
    from ridgeline_core.wire import LocalDraft

    plain = [ChatMessage("user", "Who handles payroll?")]
    augmented = with_passages(plain, [passage("Ask Ann Lee, ann@firm.example, +31 20 555 0143.")])
    draft = LocalDraft("Mail ann@firm.example", 0.4, "smollm2", 5)
    redactor = Redactor(["Ann Lee"])

    allowed = outbound("allowed", plain, augmented, draft, 1, redactor)
    assert allowed.messages == augmented and allowed.draft == draft and not allowed.withheld

    question = outbound("question-only", plain, augmented, draft, 1, redactor)
    assert question.messages == plain and question.draft is None
    assert question.withheld == ["1 retrieved passages", "the local draft (written from them)"]
    assert outbound("question-only", plain, augmented, None, 1, redactor).withheld == [
        "1 retrieved passages"
    ]

    redacted = outbound("redacted", plain, augmented, draft, 1, redactor)
    text = "\n".join(m.content for m in redacted.messages)
    assert "Ask [NAME], [EMAIL], [PHONE]." in text and "ann@" not in text
    assert redacted.draft is not None and redacted.draft.text == "Mail [EMAIL]"
    assert redacted.redacted == {"name": 1, "email": 2, "phone": 1}
    assert "redacted (1 email" not in redacted.sent and "2 email" in redacted.sent

    with pytest.raises(AssertionError):
        outbound("never", plain, augmented, draft, 1, redactor)


def test_a_profile_reads_its_judged_neighbours_only() -> None:
    import numpy as np

    from edge_agent.knowledge.library.profiles import Profile

    def unit(*values: float) -> np.ndarray:
        v = np.array(values, dtype=np.float32)
        return v / np.linalg.norm(v)

    chunks = np.stack([unit(1, 0, 0), unit(1, 1, 0)])
    judged = np.stack([unit(0, 0, 1), unit(0, 0.1, 1), unit(1, 0, 0)])
    right = np.array([False, False, True])
    profile = Profile(chunks, None, judged, right)
    assert profile.similarity(unit(1, 0.4142, 0)) == pytest.approx(1.0, abs=1e-4)  # the mean
    near_wrong = profile.judged_rate(unit(0, 0, 1))
    assert near_wrong.rate < 0.5 and near_wrong.support > 1.5 and near_wrong.judged == 3
    assert profile.judged_rate(unit(1, 0, 0)).rate > 0.5
    nothing = profile.judged_rate(unit(0, 1, 0))  # nothing judged is near: no lean
    assert nothing.rate == 0.5 and nothing.support == 0.0
    described = Profile(chunks, unit(0, 0, 1), judged[:0], right[:0])
    assert described.similarity(unit(0, 0, 1)) > profile.similarity(unit(0, 0, 1))
    assert described.judged_rate(unit(0, 0, 1)).rate == 0.5
    empty = Profile(np.zeros((0, 3), np.float32), None, judged[:0], right[:0])
    assert empty.similarity(unit(1, 0, 0)) == 0.0


def test_judged_questions_are_kept_by_dimension_and_forgotten_on_a_new_encoder(
    tmp_path: Path,
) -> None:
    import numpy as np

    from edge_agent.knowledge.library.store import CollectionFile

    file = CollectionFile("notes", tmp_path / "notes", create=True)
    file.judge(np.ones(4, np.float32), True, "feedback")
    file.judge(np.ones(8, np.float32), False, "broker")  # another encoder's size
    vectors, right = file.judged(4)
    assert vectors.shape == (1, 4) and right.tolist() == [True]
    assert file.count("judged") == 2
    file.forget_judged()
    assert file.count("judged") == 0 and file.judged(4)[0].shape == (0, 4)
    with pytest.raises(ValueError):
        file.count("sources; drop table chunks")
    file.close()
