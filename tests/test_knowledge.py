"""Local knowledge end to end: the real ONNX encoder, SmolLM2, a real broker process.

Three small collections (a handbook with a contacts page full of personal data, a device
manual in HTML and text, a cookbook as the distractor) are ingested once per module.
What reached the cloud model under each privacy setting is read from the upstream behind
the real broker (tests/recording_upstream.py), not from the edge's own record.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import SMOLLM2, MiniLM
from recording_upstream import RecordingUpstream, broker_config, recording_upstream
from support import broker_env

from edge_agent import EdgeAgent, EdgeSettings
from ridgeline_core.errors import InvalidRequestError, StoreError, UnknownCollectionError
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

EMAIL = "margit.oyelaran@kestrelvane.example"
PHONE = "+31 20 555 0143"
IBAN = "NL81 KVNE 0123 4567 89"
LEAVE = """# Kestrel & Vane handbook

## Annual leave

Every full-time employee of Kestrel & Vane gets 27 days of annual leave a year.
At most 6 unused days carry over to the next year, and they lapse on the last day of April.

## Sick days

Call your team lead before 09:30 on the first day you are ill.
"""
CONTACTS = f"""# Contacts

## Payroll

Payroll questions go to Margit Oyelaran, e-mail {EMAIL}, phone {PHONE}.
Expense refunds are paid into the company account IBAN {IBAN} first.
The payroll server is at 10.20.30.40 on the office network.
"""
MANUAL_HTML = """<html><head><title>Aerolume AL-7</title><style>p {color: red}</style></head>
<body><h1>Aerolume AL-7 air purifier</h1>
<h2>Filters</h2><p>The AL-7 uses the replacement filter with part number FX-4471.
Replace it every 7 months.</p>
<h2>Specifications</h2>
<table><tr><th>Weight</th><td>5.3 kg</td></tr><tr><th>Noise</th><td>31 dB</td></tr></table>
</body></html>"""
MANUAL_TXT = """ERROR CODES

Error code E4 means the fan motor is blocked; unplug the AL-7 and clear the intake.

RESET

To reset the AL-7, hold the power and timer buttons together for 11 seconds.
"""
COOKBOOK = """# Harrowgate bakery

## Rye loaf

The Harrowgate rye loaf bakes for 52 minutes at 215 degrees, after a 9 hour proof.

## Holiday bakes

At midwinter the bakery sells saffron buns shaped like a sleeping cat.
"""


def write_corpus(root: Path) -> dict[str, Path]:
    files = {
        "handbook/leave.md": LEAVE,
        "handbook/contacts.md": CONTACTS,
        "manual/al7.html": MANUAL_HTML,
        "manual/codes.txt": MANUAL_TXT,
        "cookbook/bakes.md": COOKBOOK,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return {name: root / name for name in ("handbook", "manual", "cookbook")}


def settings(model_store: ModelStore, root: Path, **knowledge: Any) -> EdgeSettings:
    broker = knowledge.pop("broker", None)
    return EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(model_store.root), "default": SMOLLM2},
            "runtime": {"threads": 2},
            "generation": {"max_tokens": 32, "temperature": 0.0},
            "budget": {"state_file": str(root / "budget.json")},
            "telemetry": {"sources": []},
            "embeddings": {"threads": 2},
            "knowledge": {"dir": str(root / "knowledge"), **knowledge},
            **({"broker": {"address": broker, "plaintext": True}} if broker else {}),
        }
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def library_root(
    minilm: MiniLM, model_store: ModelStore, corpus: dict[str, Path], tmp_path_factory: Any
) -> Path:
    """The three collections, ingested once for the module's read-only tests."""
    root = tmp_path_factory.mktemp("library")
    with EdgeAgent(settings(model_store, root), background=False) as agent:
        for name, path in corpus.items():
            agent.library.add(name, [path], description=f"the {name}")
    return root


@pytest.fixture
def agent(model_store: ModelStore, library_root: Path) -> Iterator[EdgeAgent]:
    with EdgeAgent(settings(model_store, library_root), background=False) as a:
        yield a


# -- ingest ------------------------------------------------------------------------------------


def test_ingest_is_incremental_private_and_removable(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    docs = write_corpus(tmp_path / "docs")
    with EdgeAgent(settings(model_store, tmp_path), background=False) as agent:
        library = agent.library
        first = library.add("handbook", [docs["handbook"]], escalate="redacted")
        assert sorted(Path(p).name for p in first.added) == ["contacts.md", "leave.md"]
        assert first.embedded == first.chunks > 0
        library.add("cookbook", [docs["cookbook"]])

        again = library.add("handbook", [docs["handbook"]])
        assert again.embedded == 0 and len(again.unchanged) == 2 and not again.added

        leave = docs["handbook"] / "leave.md"
        leave.write_text(LEAVE.replace("27 days", "29 days"), encoding="utf-8")
        changed = library.add("handbook", [docs["handbook"]])
        assert changed.changed == [str(leave)] and len(changed.unchanged) == 1
        leave_chunks = library.load("handbook").file.sources()[str(leave)].chunks
        assert changed.embedded == leave_chunks  # only that file's chunks were redone
        hits = agent.library.load("handbook").passages(
            agent.library.load("handbook").nearest(agent.embedder.embed_one("annual leave days"), 1)
        )
        assert "29 days" in hits[0].text

        (docs["handbook"] / "contacts.md").unlink()
        gone = library.add("handbook", [docs["handbook"]])
        assert [Path(p).name for p in gone.removed] == ["contacts.md"]
        assert library.info("handbook").sources == 1
        assert library.info("handbook").escalate == "redacted"  # kept across adds

        directory = tmp_path / "knowledge" / "handbook"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "chunks.sqlite").stat().st_mode) == 0o600

        library.remove("handbook")
        assert library.names() == ["cookbook"]
        assert library.info("cookbook").chunks > 0  # the other collection is untouched
        with pytest.raises(UnknownCollectionError):
            library.remove("handbook")


def test_a_pdf_is_ingested_and_cited_by_its_page(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    from pdf_file import pdf_bytes

    from edge_agent.knowledge.library import AUTO, retrieve

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "site.pdf").write_bytes(
        pdf_bytes([
            ["SITE GUIDE", "Visitors sign in at the gatehouse."],
            ["PARKING", "The Tallow Street office has 14 parking spaces for visitors."],
        ])
    )  # fmt: skip
    with EdgeAgent(settings(model_store, tmp_path), background=False) as agent:
        report = agent.library.add("site", [tmp_path / "docs"])
        assert [Path(p).name for p in report.added] == ["site.pdf"] and report.chunks == 2
        question = "How many parking spaces does the Tallow Street office have?"
        found = retrieve(agent.library, agent.embedder.embed_one(question), [AUTO],
                         experts=1, passages=1, min_similarity=0.2)  # fmt: skip
    best = found.passages[0]
    assert "14 parking spaces" in best.text and best.heading == "page 2 > Parking"
    assert best.citation(1)["source"].endswith("site.pdf")


def test_bad_sources_fail_before_anything_is_written(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    docs = write_corpus(tmp_path / "docs")
    big = tmp_path / "big.md"
    big.write_text("word " * 400, encoding="utf-8")
    edge = settings(model_store, tmp_path, max_file_bytes=1000)
    with EdgeAgent(edge, background=False) as agent:
        library = agent.library
        library.add("manual", [docs["manual"]])
        before = library.info("manual")
        with pytest.raises(InvalidRequestError, match="max_file_bytes"):
            library.add("manual", [docs["manual"], big])
        with pytest.raises(InvalidRequestError, match="max_file_bytes"):
            library.add("fresh", [big])
        assert library.names() == ["manual"]  # the new collection left nothing behind
        unreadable = tmp_path / "mem.md"
        unreadable.symlink_to("/proc/self/mem")
        with pytest.raises(InvalidRequestError, match="cannot read it"):
            library.add("manual", [unreadable])
        for name in ("../escape", "a/b", "auto"):
            with pytest.raises(InvalidRequestError, match="collection"):
                library.add(name, [docs["manual"]])
        assert library.info("manual") == before
        assert not (tmp_path / "escape").exists()


# -- retrieval -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "collection", "fact"),
    [
        ("How many days of annual leave does a Kestrel & Vane employee get?", "handbook", "27"),
        ("What is the part number of the AL-7 replacement filter?", "manual", "FX-4471"),
        ("How long do I hold the buttons to reset the Aerolume AL-7?", "manual", "11 seconds"),
        ("How heavy is the Aerolume AL-7?", "manual", "5.3 kg"),
        ("How long does the Harrowgate rye loaf bake?", "cookbook", "52 minutes"),
        ("Who answers payroll questions at Kestrel & Vane?", "handbook", "Oyelaran"),
    ],
)
def test_expert_selection_picks_the_collection_and_the_chunk(
    agent: EdgeAgent, question: str, collection: str, fact: str
) -> None:
    from edge_agent.knowledge.library import AUTO, retrieve

    found = retrieve(
        agent.library, agent.embedder.embed_one(question), [AUTO],
        experts=1, passages=3, min_similarity=0.2,
    )  # fmt: skip
    assert [e.name for e in found.experts if e.chosen] == [collection]
    assert len(found.experts) == 3 and found.experts[0].name == collection
    assert fact in found.passages[0].text
    assert all(p.collection == collection for p in found.passages)


def test_judged_outcomes_and_profiles_move_expert_selection(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    """Two collections that both answer a leave question; the one whose answers to such
    questions were judged wrong (feedback on paraphrases) loses it once judged_weight > 0.
    The judged question is kept as its embedding, in the collection's file only."""
    from edge_agent.knowledge.library import AUTO, Weights, retrieve

    (tmp_path / "north.md").write_text(
        "# North office\n\n## Leave\n\nStaff at the north office get 27 days of leave a year.\n"
    )
    (tmp_path / "south.md").write_text(
        "# South office\n\n## Leave\n\nStaff at the south office get 31 days of leave a "
        "year.\n\n## Canteen\n\nThe canteen serves soup on Fridays.\n"
    )
    question = "How many days of leave do staff get?"
    with EdgeAgent(settings(model_store, tmp_path), background=False) as agent:
        library = agent.library
        library.add("north", [tmp_path / "north.md"], description="the north office handbook")
        library.add("south", [tmp_path / "south.md"], description="the south office handbook")
        vector = agent.embedder.embed_one(question)

        def chosen(weights: Weights) -> str:
            found = retrieve(library, vector, [AUTO], experts=1, passages=3,
                             min_similarity=0.2, weights=weights)  # fmt: skip
            return next(e.name for e in found.experts if e.chosen)

        first = chosen(Weights())
        other = "south" if first == "north" else "north"
        for asked in ("How much annual leave do staff have?", "Days of leave per year for staff?",
                      "How many leave days does a member of staff get each year?"):  # fmt: skip
            agent.feedback(asked, False, knowledge=[first])
            agent.feedback(asked, True, knowledge=[other])
        assert chosen(Weights()) == first  # judged_weight 0: the judgments move nothing
        assert chosen(Weights(judged=1.0)) == other
        found = retrieve(library, vector, [AUTO], experts=2, passages=3, min_similarity=0.2,
                         weights=Weights(profile=0.5, judged=1.0))  # fmt: skip
        scores = {e.name: e for e in found.experts}
        assert scores[first].judged < 0.5 < scores[other].judged
        assert scores[other].support > 1.0 and 0 < scores[other].profile < 1
        assert scores[other].score == pytest.approx(
            scores[other].chunk + 0.5 * scores[other].profile + (scores[other].judged - 0.5)
        )
        assert library.info(first).judged == 3 and agent.memory.outcomes() == []
    stored = (tmp_path / "knowledge" / first / "chunks.sqlite").read_bytes()
    assert b"annual leave do staff" not in stored  # an embedding, never the text


def test_an_answer_from_knowledge_cites_its_passages(agent: EdgeAgent) -> None:
    answer = agent.ask(
        "How many days of annual leave does a Kestrel & Vane employee get?",
        knowledge="auto",
        mode="local",
    )
    assert answer.source == "local"
    assert "27" in answer.text  # SmolLM2 cannot know it: it read the passage
    first = answer.citations[0]
    assert first["collection"] == "handbook" and Path(first["source"]).name == "leave.md"
    assert first["heading"] == "Kestrel & Vane handbook > Annual leave"
    assert {"n", "chunk", "score", "cited"} <= set(first)
    info = answer.decision.knowledge
    assert info is not None and info.citations[0]["source"] == first["source"]
    assert [c["name"] for c in info.collections if c["chosen"]] == ["handbook"]
    assert info.sent is None  # nothing went to a broker
    assert answer.decision.timings.knowledge_ms is not None
    plain = agent.ask("How many days of annual leave does a Kestrel & Vane employee get?",
                      mode="local")  # fmt: skip
    assert plain.citations == [] and plain.decision.knowledge is None


def test_a_corrupt_collection_is_named_and_the_others_still_answer(
    minilm: MiniLM, model_store: ModelStore, corpus: dict[str, Path], tmp_path: Path
) -> None:
    edge = settings(model_store, tmp_path)
    with EdgeAgent(edge, background=False) as agent:
        agent.library.add("manual", [corpus["manual"]])
        agent.library.add("cookbook", [corpus["cookbook"]])
    broken = tmp_path / "knowledge" / "cookbook" / "chunks.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    with EdgeAgent(edge, background=False) as agent:
        with pytest.raises(StoreError, match=r"'cookbook'.*knowledge rm cookbook"):
            agent.ask("How long does the rye loaf bake?", knowledge="cookbook", mode="local")
        answer = agent.ask("What is the AL-7 filter part number?", knowledge="auto", mode="local")
        info = answer.decision.knowledge
        assert info is not None and info.skipped[0].startswith("cookbook:")
        assert answer.citations[0]["collection"] == "manual"
        with pytest.raises(UnknownCollectionError):
            agent.ask("Anything?", knowledge="nosuch", mode="local")
    assert broken.read_bytes().startswith(b"this is not a database")  # left for the user


# -- privacy, checked at the broker -------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def recorded_broker(
    upstream: RecordingUpstream, model_store: ModelStore, tmp_path_factory: Any
) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("recorded-broker")
    env = broker_env(model_store, root)
    process = BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0"], env,
        config=broker_config(upstream.base_url), tmp_path=root,
    )  # fmt: skip
    yield process
    process.stop()


PAYROLL = "Who answers payroll questions at Kestrel & Vane, and how do I reach them?"


@pytest.mark.parametrize("setting", ["never", "question-only", "redacted", "allowed"])
def test_each_privacy_setting_is_what_reached_the_broker(
    setting: str,
    upstream: RecordingUpstream,
    recorded_broker: BrokerProcess,
    minilm: MiniLM,
    model_store: ModelStore,
    corpus: dict[str, Path],
    tmp_path: Path,
) -> None:
    edge = settings(model_store, tmp_path, broker=recorded_broker.address,
                    redact_names=["Margit Oyelaran"])  # fmt: skip
    with EdgeAgent(edge, background=False) as agent:
        agent.library.add("handbook", [corpus["handbook"]], escalate=setting)
        upstream.take()
        answer = agent.ask(PAYROLL, knowledge="handbook", mode="cloud")
    received = "\n".join(upstream.texts())
    info = answer.decision.knowledge
    assert info is not None and info.escalate == setting and info.escalate_from == "handbook"
    if setting == "never":
        assert received == ""  # nothing left the device
        assert answer.source == "local" and "escalate = never" in answer.decision.reason
        assert info.sent is None
        return
    assert answer.source == "cloud" and PAYROLL in received
    if setting == "question-only":
        assert EMAIL not in received and "Payroll questions go to" not in received
        assert info.sent == "the question only" and "retrieved passages" in info.withheld[0]
        assert answer.citations == []  # the broker read no passage
    elif setting == "redacted":
        assert "Payroll questions go to [NAME], e-mail [EMAIL], phone [PHONE]" in received
        for private in (EMAIL, PHONE, IBAN, "10.20.30.40", "Margit Oyelaran"):
            assert private not in received
        assert info.redacted["email"] == 1 and info.redacted["iban"] == 1
        assert info.redacted["name"] >= 1 and info.redacted["ip"] == 1
    else:
        assert EMAIL in received and IBAN in received
        assert info.withheld == [] and info.redacted == {}


def test_the_global_setting_holds_for_collections_without_their_own(
    upstream: RecordingUpstream,
    recorded_broker: BrokerProcess,
    minilm: MiniLM,
    model_store: ModelStore,
    corpus: dict[str, Path],
    tmp_path: Path,
) -> None:
    edge = settings(model_store, tmp_path, broker=recorded_broker.address, escalate="never")
    with EdgeAgent(edge, background=False) as agent:
        agent.library.add("handbook", [corpus["handbook"]])  # no setting of its own
        agent.library.add("cookbook", [corpus["cookbook"]], escalate="allowed")
        upstream.take()
        kept = agent.ask(PAYROLL, knowledge="auto", mode="cloud")
        assert kept.source == "local" and upstream.take() == []
        sent = agent.ask("How long does the Harrowgate rye loaf bake?", knowledge="auto",
                         mode="cloud")  # fmt: skip
    assert sent.source == "cloud"
    assert "52 minutes" in "\n".join(upstream.texts())  # allowed: the passage went along


# -- the command line ----------------------------------------------------------------------


def test_the_knowledge_commands(
    minilm: MiniLM, model_store: ModelStore, corpus: dict[str, Path], tmp_path: Path
) -> None:
    from conftest import isolated_env

    env = isolated_env(model_store, tmp_path)
    env["RIDGELINE_EDGE_KNOWLEDGE__DIR"] = str(tmp_path / "knowledge")
    env["RIDGELINE_EDGE_EMBEDDINGS__THREADS"] = "2"
    added = run("edge-agent", "knowledge", "add", "manual", str(corpus["manual"]),
                "--escalate", "never", "--description", "the AL-7 manual", env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "manual: 2 added, 0 changed" in added.stdout
    listed = run("edge-agent", "knowledge", "list", env=env)
    assert "manual" in listed.stdout and "never" in listed.stdout
    found = run("edge-agent", "knowledge", "search", "AL-7 filter part number", env=env)
    assert found.returncode == 0, found.stderr
    assert "FX-4471" in found.stdout and "manual 0." in found.stdout
    question = "What is the AL-7 filter part number?"
    asked = run("edge-agent", "ask", question, "--knowledge", "manual", "--mode", "local",
                "--max-tokens", "24", env=env)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "[1] manual · al7.html #0" in asked.stderr
    judged = run("edge-agent", "feedback", question, "--wrong", "--knowledge", "manual", env=env)
    assert judged.returncode == 0, judged.stderr
    assert "answered wrong from manual" in judged.stdout
    listed = json.loads(run("edge-agent", "knowledge", "list", "--json", env=env).stdout)
    assert [c["judged"] for c in listed["collections"]] == [1]
    auto = run("edge-agent", "feedback", question, "--right", "--knowledge", "auto", env=env)
    assert auto.returncode == 3 and "not auto" in auto.stderr
    bad = run("edge-agent", "knowledge", "add", "../up", str(corpus["manual"]), env=env)
    assert bad.returncode == 3 and "invalid collection name" in bad.stderr
    missing = run("edge-agent", "ask", "hi", "--knowledge", "nosuch", env=env)
    assert missing.returncode == 4 and "no knowledge collection named 'nosuch'" in missing.stderr
    removed = run("edge-agent", "knowledge", "rm", "manual", env=env)
    assert removed.returncode == 0 and "removed collection manual" in removed.stdout
    assert "no collections" in run("edge-agent", "knowledge", "list", env=env).stdout


# -- the daemon: the OpenAI API and the gRPC edge service -----------------------------------


def test_the_daemon_answers_from_knowledge_over_http_and_grpc(
    model_store: ModelStore, library_root: Path, tmp_path: Path
) -> None:
    import openai
    from daemonthread import ThreadDaemon

    from edge_agent import EdgeClient

    edge = settings(model_store, library_root)
    edge = edge.model_copy(
        update={"daemon": edge.daemon.model_copy(update={"http": "127.0.0.1:0",
                                                          "grpc": "127.0.0.1:0"})}
    )  # fmt: skip
    daemon = ThreadDaemon(edge)
    question = "What is the part number of the AL-7 replacement filter?"
    try:
        api = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
        completion = api.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": question}],
            extra_body={"ridgeline": {"knowledge": ["auto"], "mode": "local"}},
        )
        extension = (completion.model_extra or {})["ridgeline"]
        assert extension["citations"][0]["collection"] == "manual"
        assert extension["decision"]["knowledge"]["collections"][0]["name"] == "manual"
        with pytest.raises(openai.NotFoundError, match="no knowledge collection"):
            api.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": question}],
                extra_body={"ridgeline": {"knowledge": "nosuch", "mode": "local"}},
            )
        with EdgeClient(daemon.grpc) as client:
            answer = client.ask(question, knowledge="manual", mode="local")
            assert Path(answer.citations[0]["source"]).name == "al7.html"
            assert answer.decision.knowledge is not None
            assert (
                answer.decision.knowledge.citations
                == extension["decision"]["knowledge"]["citations"]
            )
            with pytest.raises(UnknownCollectionError):
                client.ask(question, knowledge=["nosuch"], mode="local")
    finally:
        daemon.stop()


# -- an expert's own model and LoRA adapter ----------------------------------------------


def test_an_expert_answers_with_its_adapter(
    minilm: MiniLM,
    model_store: ModelStore,
    smollm2_path: Path,
    corpus: dict[str, Path],
    tmp_path: Path,
) -> None:
    from lora_adapter import build_adapter

    from edge_agent.knowledge.library import ExpertFiles
    from ridgeline_core.errors import IntegrityError

    adapter = build_adapter(smollm2_path, tmp_path / "manual-lora.gguf", strength=2.0)
    question = "What is the part number of the AL-7 replacement filter?"
    with EdgeAgent(settings(model_store, tmp_path), background=False) as agent:
        library = agent.library
        library.add("plain", [corpus["manual"]])
        library.add("zero", [corpus["manual"]], expert=ExpertFiles(SMOLLM2, adapter, 0.0))
        library.add("tuned", [corpus["manual"]], expert=ExpertFiles(None, adapter, 1.0))
        base = agent.ask(question, knowledge="plain", mode="local")
        zero = agent.ask(question, knowledge="zero", mode="local")
        tuned = agent.ask(question, knowledge="tuned", mode="local")
        assert base.decision.knowledge is not None and base.decision.knowledge.adapter is None
        assert zero.decision.knowledge is not None
        assert zero.decision.knowledge.adapter == str(adapter)
        assert zero.text == base.text  # scale 0: the base model's answer
        assert tuned.text != base.text
        chosen = [c for c in tuned.decision.knowledge.collections if c["chosen"]]  # type: ignore[union-attr]
        assert chosen[0]["adapter"] == str(adapter)
        with pytest.raises(InvalidRequestError, match="not a GGUF"):
            library.add(
                "bad", [corpus["manual"]], expert=ExpertFiles(None, corpus["manual"] / "codes.txt")
            )
        assert "bad" not in library.names()
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\0\0\0\0")  # changed after adding
    with (
        EdgeAgent(settings(model_store, tmp_path), background=False) as agent,
        pytest.raises(IntegrityError, match="sha256"),  # never loaded
    ):
        agent.ask(question, knowledge="tuned", mode="local")


# -- calibrate and eval on questions that name a collection --------------------------------

KNOWLEDGE_QUESTIONS = [
    ("handbook", "How many days of annual leave does a Kestrel & Vane employee get?", "27"),
    ("handbook", "How many unused leave days carry over at Kestrel & Vane?", "6"),
    ("handbook", "By what time must a sick Kestrel & Vane employee call?", "09:30"),
    ("handbook", "Who answers payroll questions at Kestrel & Vane?", "Oyelaran"),
    ("handbook", "Into which account are Kestrel & Vane refunds paid?", "NL81"),
    ("handbook", "What is the Kestrel & Vane payroll server's address?", "10.20.30.40"),
    ("manual", "What is the part number of the AL-7 replacement filter?", "FX-4471"),
    ("manual", "How often should the AL-7 filter be replaced?", "7 months"),
    ("manual", "What does error code E4 mean on the AL-7?", "blocked"),
    ("manual", "How long do I hold the buttons to reset the AL-7?", "11 seconds"),
    ("manual", "How heavy is the Aerolume AL-7?", "5.3"),
    ("manual", "How loud is the AL-7?", "31 dB"),
    ("cookbook", "How long does the Harrowgate rye loaf bake?", "52 minutes"),
    ("cookbook", "How long does the Harrowgate rye loaf proof?", "9 hour"),
    ("cookbook", "What are the Harrowgate midwinter buns shaped like?", "cat"),
    ("cookbook", "Who founded the Harrowgate bakery?", "Edda Pellow"),  # not in the corpus
]


def test_calibrate_and_eval_answer_from_the_collections_a_dataset_names(
    minilm: MiniLM, model_store: ModelStore, library_root: Path, tmp_path: Path
) -> None:
    from conftest import isolated_env

    dataset = tmp_path / "knowledge.jsonl"
    dataset.write_text(
        "\n".join(
            json.dumps({"id": f"k{i}", "collection": c, "prompt": q, "answers": [a]})
            for i, (c, q, a) in enumerate(KNOWLEDGE_QUESTIONS)
        ),
        encoding="utf-8",
    )
    env = isolated_env(model_store, tmp_path)
    env["RIDGELINE_EDGE_KNOWLEDGE__DIR"] = str(library_root / "knowledge")
    env["RIDGELINE_EDGE_EMBEDDINGS__THREADS"] = "2"
    out = tmp_path / "smollm2.knowledge.calibration.json"
    fitted = run("edge-agent", "calibrate", "--dataset", str(dataset), "--out", str(out),
                 "--no-plot", "--max-tokens", "32", "--json", env=env)  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    report = json.loads(fitted.stdout)
    assert {m["method"] for m in report["methods"]} >= {"logistic-knowledge", "platt"}
    assert not any(m["method"] == "logistic-fast" for m in report["methods"])  # probes: no
    saved = json.loads(out.read_text())
    assert saved["info"]["knowledge"] is True
    if saved["calibrator"]["kind"] == "logistic":
        assert "answer_in_passages" in saved["features"]
    env["RIDGELINE_EDGE_CONFIDENCE__KNOWLEDGE_CALIBRATION_FILE"] = str(out)
    evaluated = run("edge-agent", "eval", "--dataset", str(dataset), "--max-tokens", "32",
                    "--json", env=env)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["calibrated"] is True and result["n"] == len(KNOWLEDGE_QUESTIONS)
    assert result["local_accuracy"] >= 0.5  # the passages hold most answers
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"collection": "nosuch", "prompt": "x?", "answers": ["y"]}))
    refused = run("edge-agent", "eval", "--dataset", str(missing), env=env)
    assert refused.returncode == 4 and "collection 'nosuch' is not on this device" in refused.stderr
