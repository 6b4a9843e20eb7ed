"""Strategies: what routing, cascades and ensembles of our small models buy on
``datasets/ridgeline-qa-v1`` (issue 17), in accuracy, cost and latency.

Subcommands:

* ``collect``: a real ``cloud-broker serve --dev`` process serves SmolLM2-135M-Instruct and
  Gemma-3-270M (base) from the model store; every question of train and test goes through
  the real gRPC client (``BrokerClient``) to each member: both models greedy, plus
  ``--samples`` sampled answers per model (temperature ``--temperature``, a seed per
  question and k) on the splits of ``--sample-splits`` (test by default: only the
  ensembles use them, and the router trains on one outcome per prompt and model). Every
  member gets the same chat: ``SYSTEM`` and the
  ``FEW_SHOT`` turns (written for this benchmark, none from the data set), then the
  question; ``--max-tokens`` 24, stop at a newline. Answers are judged with
  ``edge_agent.evaluation.matcher.is_correct``. Greedy outcomes go to
  ``benchmarks/data/strategies/outcomes-{split}.jsonl`` (the judged-outcome format that
  ``cloud-broker router train`` reads, one line per prompt and model), sampled ones to
  ``samples-{split}.jsonl``; a rerun resumes where the files stop (``--refresh``: anew).
  Run it alone (under ``flock /tmp/cpu.lock`` here): llama.cpp's threads spin, so a busy
  machine slows it many times over; ``collect.json`` records the load average around it.
* ``prompt-check``: greedy answers of both models on ``--limit`` train questions with and
  without the few-shot turns: the accuracies that chose the prompt, and a few answers.
* ``run``: trains the learned router (``cloud-broker router train`` on the train outcomes),
  starts a broker with ``[prices]`` and the named ``[[strategies]]`` of ``strategies_toml``
  and sends every test question to each strategy by name (``Strategy.name``; the learned
  route once per ``--wtp`` value as the request's ``willingness_to_pay``; the rule route
  with ``Strategy.task`` = the question's kind). Rows go to ``runs-test.jsonl``: the
  answer, whether it is right, ``result.cost``, the members, the client's latency.
* ``report``: the table (Markdown, stdout and ``benchmarks/results/strategies.md``) and the
  cost-accuracy plot (``benchmarks/results/strategies.png``) from the collected test
  outcomes, the strategies' runs, and rows simulated from the outcomes, marked "sim"
  (exact replays where the broker's answers are the collected ones: oracle, rules; the
  vote and an agreement cascade as stand-ins until the broker's own rows exist).

Definitions (printed with the table):

* cost of an answer = prompt tokens / 1000 x prompt price + completion tokens / 1000 x
  completion price, with ``PRICES`` (price unit per 1k tokens). Gemma costs twice SmolLM2
  per token, the ratio of their parameter counts (270M / 135M).
* weak = the cheaper single model, strong = the more accurate one (RouteLLM's pair).
  PGR = (accuracy - weak accuracy) / (strong accuracy - weak accuracy). Oracle gap
  recovered = (accuracy - best single) / (oracle router - best single): issue 17's target
  for the learned router.
* strong calls = the share of test questions on which the strong model generated (an
  answer or a sample; RouteLLM's "% calls to the strong model"). cost % = the row's cost
  / the strong model's cost over the same questions.
* A router's or cascade's curve: its operating points (strong calls, accuracy), one per
  setting swept, plus all-weak (0, weak) and all-strong (1, strong), in order of strong
  calls, the best accuracy kept where two share a share, joined by straight lines (mixing
  two settings at random per question reaches every point between them). APGR = the
  area under PGR over strong calls 0..1; CPT(x) = the fewest strong calls on the curve
  with PGR >= x. Ensembles call every member, so they have no curve ("-").

    flock /tmp/cpu.lock .venv/bin/python benchmarks/strategies.py collect [--samples 2]
    .venv/bin/python benchmarks/strategies.py report
    .venv/bin/python benchmarks/strategies.py run [--strategies rules,learned,...]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edge_agent.evaluation.dataset import QAItem, load_dataset  # noqa: E402
from edge_agent.evaluation.matcher import NO_WORDS, YES_WORDS, is_correct, normalise  # noqa: E402

DATA = ROOT / "datasets" / "ridgeline-qa-v1"
OUT = ROOT / "benchmarks" / "data" / "strategies"
RESULTS = ROOT / "benchmarks" / "results"
SPLITS = ("test", "train")  # test first: the report needs it, the router only train
DEFAULT_STORE = Path("/work/teststore")

SMOLLM2 = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
MODELS = (SMOLLM2, GEMMA)  # cheapest first


@dataclass(frozen=True)
class Price:
    prompt_per_1k: float
    completion_per_1k: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k
        ) / 1000


# The one place prices live: the report's costs and the broker.toml of `run` both use it.
# Gemma-3-270M costs twice SmolLM2-135M per token, the ratio of their parameter counts.
PRICES = {
    SMOLLM2: Price(prompt_per_1k=0.001, completion_per_1k=0.002),
    GEMMA: Price(prompt_per_1k=0.002, completion_per_1k=0.004),
}

SYSTEM = "Answer the question in a few words."
# Written for this benchmark (none of these is in the data set): the shape of an answer,
# so that Gemma-3-270M base answers instead of continuing the text.
FEW_SHOT = (
    ("What is the deepest lake in the world?", "Lake Baikal"),
    ("What is 23 plus 19?", "42"),
    ("Do owls hunt at night?", "Yes"),
    ("What is the chemical symbol for copper?", "Cu"),
)
STOP = ("\n",)


def messages(question: str, few_shot: bool = True) -> list[dict[str, str]]:
    """The chat every member gets: the system line, the few-shot turns, the question."""
    chat = [{"role": "system", "content": SYSTEM}]
    if few_shot:
        for asked, answered in FEW_SHOT:
            chat += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return [*chat, {"role": "user", "content": question}]


@dataclass(frozen=True)
class Member:
    """One ensemble member: a model, greedy, or the ``sample``-th sampled answer."""

    model: str
    temperature: float = 0.0
    sample: int = 0  # 0: greedy

    @property
    def variant(self) -> str:
        return "greedy" if self.sample == 0 else f"t{self.temperature:g}-s{self.sample}"

    @property
    def name(self) -> str:
        return self.model if self.sample == 0 else f"{self.model}@{self.variant}"

    def seed(self, question_id: str) -> int | None:
        """The sample's seed, drawn per question: with one seed for every question, each
        answer reads the same random numbers, so a member is not a sample but a fixed bias
        (seed 1 at temperature 0.7 picked an unlikely first token on all 117 test questions
        tried: none matched the greedy answer, against 40 of 116 for seed 2)."""
        if self.sample == 0:
            return None
        return zlib.crc32(f"{question_id}/{self.sample}".encode()) & 0x7FFFFFFF


def members(samples: int, temperature: float) -> list[Member]:
    """Per model (cheapest first): greedy, then ``samples`` sampled answers."""
    out = []
    for model in MODELS:
        out.append(Member(model))
        out += [Member(model, temperature, k) for k in range(1, samples + 1)]
    return out


# -- the broker process ------------------------------------------------------------------


def broker_toml(store: Path, extra: str = "") -> str:
    """The broker's config: both models from ``store``, no per-device limits."""
    served = ", ".join(f'"{m}"' for m in MODELS)
    return (
        f'[models]\nstore_dir = "{store}"\nserve = [{served}]\ndefault = "{SMOLLM2}"\n\n'
        "[limits]\nrequests_per_minute = 0\ntokens_per_minute = 0\n" + extra
    )


@contextlib.contextmanager
def broker(store: Path, workdir: Path, extra: str = "", timeout_s: float = 180.0) -> Iterator[str]:
    """``cloud-broker serve --dev`` (plaintext, auth off, loopback) of this checkout; yields
    its address. The log goes to ``benchmarks/results/strategies-broker.log``."""
    import asyncio

    from broker_overhead import ServerProcess

    config = workdir / "broker.toml"
    config.write_text(broker_toml(store, extra), encoding="utf-8")
    env = {
        "PYTHONPATH": str(ROOT),
        "HOME": str(workdir),
        "XDG_CONFIG_HOME": str(workdir / "config"),
        "XDG_CACHE_HOME": str(workdir / "cache"),
        "RIDGELINE_BROKER_MODELS__STORE_DIR": str(store),
    }
    argv = [sys.executable, "-m", "cloud_broker", "--config", str(config), "serve", "--dev"]
    argv += ["--listen", "127.0.0.1:0"]
    log = RESULTS / "strategies-broker.log"
    server = ServerProcess("broker", argv, log, cwd=workdir, env=env)
    try:
        port = asyncio.run(server.wait_listening(timeout_s))
        print(f"broker on 127.0.0.1:{port} (log {log.relative_to(ROOT)})", file=sys.stderr)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


# -- collect -------------------------------------------------------------------------------


def ask(
    client: Any, item: QAItem, member: Member, max_tokens: int, few_shot: bool = True
) -> dict[str, Any]:
    """One judged answer of ``member`` to ``item`` through the broker."""
    started = time.perf_counter()
    answer = client.ask(
        messages(item.prompt, few_shot),
        model=member.model,
        max_tokens=max_tokens,
        temperature=member.temperature,
        seed=member.seed(item.id),
        stop=list(STOP),
    )
    latency_ms = (time.perf_counter() - started) * 1000
    usage = answer.result.usage
    return {
        "id": item.id,
        "kind": item.kind,
        "prompt": item.prompt,
        "model": member.model,
        "variant": member.variant,
        "member": member.name,
        "answer": answer.text,
        "correct": is_correct(answer.text, item.answers),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost": PRICES[member.model].cost(usage.prompt_tokens, usage.completion_tokens),
        "latency_ms": round(latency_ms, 1),
        "broker_ms": round(answer.result.timings.total_ms, 1),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def outcome_files(split: str, out: Path = OUT) -> tuple[Path, Path]:
    """(greedy outcomes, sampled outcomes) of ``split``."""
    return out / f"outcomes-{split}.jsonl", out / f"samples-{split}.jsonl"


def collect_split(client: Any, split: str, chosen: list[Member], args: argparse.Namespace) -> None:
    """Answers every question of ``split`` by every member (question by question, so a
    partial file holds whole questions), appending to the outcome files."""
    items = load_dataset(DATA / f"{split}.jsonl")[: args.limit]
    greedy_file, samples_file = outcome_files(split, args.out)
    done = {(r["id"], r["member"]) for f in (greedy_file, samples_file) for r in read_jsonl(f)}
    todo = [(i, m) for i in items for m in chosen if (i.id, m.name) not in done]
    print(f"{split}: {len(items)} questions x {len(chosen)} members, {len(todo)} to answer",
          file=sys.stderr)  # fmt: skip
    started, right = time.perf_counter(), Counter[str]()
    with (
        greedy_file.open("a", encoding="utf-8") as greedy,
        contextlib.ExitStack() as stack,
    ):
        sampled = (
            stack.enter_context(samples_file.open("a", encoding="utf-8"))
            if any(m.variant != "greedy" for m in chosen)
            else greedy  # never written: greedy members only
        )
        for n, (item, member) in enumerate(todo, 1):
            row = ask(client, item, member, args.max_tokens)
            right[member.name] += row["correct"]
            (greedy if member.variant == "greedy" else sampled).write(json.dumps(row) + "\n")
            if n % 25 == 0 or n == len(todo):
                greedy.flush()
                sampled.flush()
                rate = n / (time.perf_counter() - started)
                print(f"  {split}: {n}/{len(todo)} answers, {rate:.2f}/s, "
                      f"eta {(len(todo) - n) / rate / 60:.1f} min; right so far: "
                      + ", ".join(f"{k} {v}" for k, v in right.items()),
                      file=sys.stderr, flush=True)  # fmt: skip


def collect(args: argparse.Namespace) -> None:
    from ridgeline_core.client import BrokerClient

    args.out.mkdir(parents=True, exist_ok=True)
    if args.refresh:
        for split in args.splits:
            for path in outcome_files(split, args.out):
                path.unlink(missing_ok=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp,
        broker(args.store, Path(tmp)) as address,
    ):
        client = BrokerClient(address, plaintext=True, timeout_s=300)
        try:
            for split in args.splits:
                every = members(
                    args.samples if split in args.sample_splits else 0, args.temperature
                )
                collect_split(client, split, every, args)
        finally:
            client.close()
    record = {
        "command": command_line(),
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "max_tokens": args.max_tokens,
        "samples": args.samples,
        "temperature": args.temperature,
        "system": SYSTEM,
        "few_shot": FEW_SHOT,
    }
    (args.out / "collect.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"done in {record['seconds']:.0f} s; load average {load_before[0]:.2f} -> "
          f"{record['loadavg_after'][0]:.2f}; {args.out.relative_to(ROOT)}/collect.json",
          file=sys.stderr)  # fmt: skip


def prompt_check(args: argparse.Namespace) -> None:
    """Greedy accuracy of each model with and without the few-shot turns (``--limit``
    train questions): what chose the prompt."""
    from ridgeline_core.client import BrokerClient

    items = load_dataset(DATA / "train.jsonl")
    items = items[:: max(1, len(items) // args.limit)][: args.limit]  # every kind
    with (
        tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp,
        broker(args.store, Path(tmp)) as address,
    ):
        client = BrokerClient(address, plaintext=True, timeout_s=300)
        rows = [
            (model, few, ask(client, item, Member(model), args.max_tokens, few_shot=few))
            for item in items
            for model in MODELS
            for few in (False, True)
        ]
        client.close()
    print(f"\n{len(items)} train questions, greedy, max_tokens {args.max_tokens}\n")
    print("| model | prompt | accuracy | mean completion tokens |\n|---|---|---:|---:|")
    for model in MODELS:
        for few in (False, True):
            mine = [r for m, f, r in rows if m == model and f == few]
            acc = sum(r["correct"] for r in mine) / len(mine)
            tokens = sum(r["completion_tokens"] for r in mine) / len(mine)
            label = "system + few-shot" if few else "system only"
            print(f"| {model} | {label} | {acc:.3f} | {tokens:.1f} |")
    print("\n| question | model | prompt | answer | right |\n|---|---|---|---|---|")
    for model, few, r in rows[: 4 * 8]:
        label = "few-shot" if few else "system"
        print(f"| {r['prompt']} | {model} | {label} | {r['answer']!r} | {r['correct']} |")


# -- pure metrics (tests/test_strategies_bench.py) ----------------------------------------


def pgr(accuracy: float, weak_acc: float, strong_acc: float) -> float:
    gap = strong_acc - weak_acc
    return math.nan if gap == 0 else (accuracy - weak_acc) / gap


def curve(
    points: Sequence[tuple[float, float]], weak_acc: float, strong_acc: float
) -> list[tuple[float, float]]:
    """The operating points with all-weak and all-strong, by strong calls; where two share
    a share of strong calls the more accurate stays."""
    best: dict[float, float] = {}
    for x, acc in [(0.0, weak_acc), *points, (1.0, strong_acc)]:
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"strong-call share {x} is outside [0, 1]")
        best[x] = max(acc, best.get(x, -math.inf))
    return sorted(best.items())


def apgr(points: Sequence[tuple[float, float]], weak_acc: float, strong_acc: float) -> float:
    """Area under PGR over strong calls 0..1 of ``curve(points)``, straight lines between."""
    xs, accs = zip(*curve(points, weak_acc, strong_acc), strict=True)
    gains = [pgr(a, weak_acc, strong_acc) for a in accs]
    return float(
        sum(
            (x1 - x0) * (g0 + g1) / 2
            for x0, x1, g0, g1 in zip(xs, xs[1:], gains, gains[1:], strict=False)
        )
    )


def cpt(
    points: Sequence[tuple[float, float]], weak_acc: float, strong_acc: float, target: float
) -> float:
    """Fewest strong calls with PGR >= ``target`` on ``curve(points)`` (between two points
    on the line joining them); nan when the curve never gets there."""
    line = [(x, pgr(a, weak_acc, strong_acc)) for x, a in curve(points, weak_acc, strong_acc)]
    if line[0][1] >= target - 1e-12:
        return line[0][0]
    for (x0, g0), (x1, g1) in itertools.pairwise(line):
        if g1 >= target - 1e-12 and g0 < target:
            return x0 + (x1 - x0) * (target - g0) / (g1 - g0)
    return math.nan


def oracle(correct: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per question (rows), the model (column) an oracle router picks: the cheapest right
    one, else the cheapest."""
    masked = np.where(correct, cost, np.inf)
    cheapest_right = np.argmin(masked, axis=1)
    return np.where(correct.any(axis=1), cheapest_right, np.argmin(cost, axis=1))


def vote_key(text: str) -> str:
    """What an answer votes for (the broker's rule): yes/no when its first word says so,
    else the normalised words of its first line, at most twelve."""
    lines = [line for line in text.splitlines() if line.strip()]
    words = normalise(lines[0]).split() if lines else []
    if words and words[0] in YES_WORDS:
        return "yes"
    if words and words[0] in NO_WORDS:
        return "no"
    return " ".join(words[:12])


def vote(answers: Sequence[str]) -> int:
    """Index of the answer the majority voted for (its first voter); a tie goes to the
    earliest voter; empty answers do not vote (-1 when none voted)."""
    keys = [vote_key(a) for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return -1
    top = max(counts.values())
    return next(i for i, k in enumerate(keys) if k and counts[k] == top)


# -- report ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One operating point: per test question whether it was right, cost, latency and
    whether the strong model generated."""

    name: str
    source: str  # "collected", "sim", "broker"
    correct: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray
    strong: np.ndarray | None  # None: no curve (ensembles)
    curve: str = ""  # rows of one sweep share a curve name
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcomes:
    """The collected test outcomes, aligned by question: one column per member."""

    ids: list[str]
    kinds: list[str]
    members: list[str]
    models: list[str]  # the model of each member
    correct: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray
    answers: list[list[str]]

    def column(self, member: str) -> int:
        return self.members.index(member)


def load_outcomes(split: str, out: Path = OUT) -> Outcomes:
    """Every question that every collected member answered (a partial collect keeps the
    questions it finished)."""
    rows = [r for f in outcome_files(split, out) for r in read_jsonl(f)]
    if not rows:
        raise SystemExit(f"no outcomes in {out}: run `benchmarks/strategies.py collect` first")
    by_member: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_member.setdefault(r["member"], {})[r["id"]] = r
    order = [m.name for m in members(16, 0.7)]
    names = sorted(by_member, key=lambda m: order.index(m) if m in order else len(order))
    ids = [i for i in dict.fromkeys(r["id"] for r in rows) if all(i in by_member[m] for m in names)]
    pick = [[by_member[m][i] for m in names] for i in ids]
    return Outcomes(
        ids=ids,
        kinds=[p[0]["kind"] for p in pick],
        members=names,
        models=[by_member[m][ids[0]]["model"] for m in names],
        correct=np.array([[bool(r["correct"]) for r in p] for p in pick]),
        cost=np.array([[r["cost"] for r in p] for p in pick]),
        latency_ms=np.array([[r["latency_ms"] for r in p] for p in pick]),
        answers=[[r["answer"] for r in p] for p in pick],
    )


@dataclass(frozen=True)
class Pair:
    """RouteLLM's pair: weak = the cheaper single model, strong = the more accurate."""

    weak: str
    strong: str
    weak_acc: float
    strong_acc: float
    strong_cost: float  # the strong model's cost over the test questions
    note: str = ""


def pair_of(o: Outcomes) -> Pair:
    acc = {m: float(o.correct[:, o.column(m)].mean()) for m in MODELS}
    cost = {m: float(o.cost[:, o.column(m)].sum()) for m in MODELS}
    weak = min(MODELS, key=lambda m: cost[m])
    strong = max(MODELS, key=lambda m: (acc[m], -cost[m]))
    note = ""
    if strong == weak:  # no trade-off: the cheaper is as good; keep a pair to measure against
        strong = next(m for m in MODELS if m != weak)
        note = f"{weak} is both cheaper and at least as accurate: PGR is against a worse strong"
    return Pair(weak, strong, acc[weak], acc[strong], cost[strong], note)


def single_rows(o: Outcomes, pair: Pair) -> list[Row]:
    rows = []
    for model in MODELS:
        col = o.column(model)
        strong = np.full(len(o.ids), model == pair.strong)
        rows.append(Row(f"single: {model}", "collected", o.correct[:, col], o.cost[:, col],
                        o.latency_ms[:, col], strong))  # fmt: skip
    return rows


def routed(o: Outcomes, pair: Pair, name: str, chosen: np.ndarray, curve_name: str = "") -> Row:
    """A router's row from the greedy column it picks per question (an exact replay:
    greedy answers are repeatable)."""
    cols = [o.column(m) for m in MODELS]
    at = (np.arange(len(o.ids)), np.asarray(cols)[chosen])
    strong = chosen == MODELS.index(pair.strong)
    return Row(name, "sim", o.correct[at], o.cost[at], o.latency_ms[at], strong, curve_name)


def oracle_row(o: Outcomes, pair: Pair) -> Row:
    cols = [o.column(m) for m in MODELS]
    return routed(o, pair, ORACLE, oracle(o.correct[:, cols], o.cost[:, cols]))


def oracle_without_yes_no(o: Outcomes, pair: Pair) -> Row:
    """The oracle, except that yes/no questions go to the single model best on them: both
    models answer yes/no by a near-constant (few-shot or not), so picking the one whose
    constant matches is a ceiling no prompt-only router can reach."""
    cols = [o.column(m) for m in MODELS]
    chosen = oracle(o.correct[:, cols], o.cost[:, cols])
    polar = np.array([k == "yesno" for k in o.kinds])
    if polar.any():
        best = int(np.argmax(o.correct[polar][:, cols].mean(axis=0)))
        chosen = np.where(polar, best, chosen)
    return routed(o, pair, f"{ORACLE}, yes/no to the best single", chosen)


def polar_answers(o: Outcomes) -> str:
    """How each greedy model answers the yes/no questions."""
    polar = [i for i, k in enumerate(o.kinds) if k == "yesno"]
    out = []
    for model in MODELS:
        keys = Counter(vote_key(o.answers[i][o.column(model)]) for i in polar)
        out.append(f"{model} {keys['yes']} yes / {keys['no']} no")
    return f"yes/no answers on the {len(polar)} yes/no questions: " + ", ".join(out)


def kind_rules(train: Outcomes) -> dict[str, str]:
    """Per kind, the model most accurate on train (a tie: the cheaper): the rule router's
    rules, fitted on train only."""
    rules = {}
    for kind in sorted(set(train.kinds)):
        rows = np.array([k == kind for k in train.kinds])
        acc = {m: float(train.correct[rows, train.column(m)].mean()) for m in MODELS}
        rules[kind] = max(MODELS, key=lambda m: (acc[m], -MODELS.index(m)))
    return rules


def rules_row(o: Outcomes, pair: Pair, rules: dict[str, str]) -> Row:
    chosen = np.array([MODELS.index(rules.get(k, MODELS[0])) for k in o.kinds])
    return routed(o, pair, "rule router (task = kind)", chosen)


def sampled_columns(o: Outcomes, model: str) -> list[int]:
    return [i for i, m in enumerate(o.members) if o.models[i] == model and m != model]


def agreement_cascade_rows(o: Outcomes, pair: Pair) -> list[Row]:
    """Cascade weak -> strong, the weak greedy answer accepted when at least ``threshold``
    of the weak model's samples vote as it does; costs the greedy answer, the samples and
    (when passed on) the strong answer; latency their sum."""
    w, s, samples = o.column(pair.weak), o.column(pair.strong), sampled_columns(o, pair.weak)
    if not samples:
        return []
    agree = np.array([
        np.mean([vote_key(a[c]) == vote_key(a[w]) for c in samples]) for a in o.answers
    ])  # fmt: skip
    base_cost = o.cost[:, [w, *samples]].sum(axis=1)
    base_ms = o.latency_ms[:, [w, *samples]].sum(axis=1)
    rows = []
    for threshold in sorted({*agree.tolist(), 1.0}):
        if threshold == 0:
            continue  # accepts everything: the weak model with extra samples
        passed = agree < threshold
        rows.append(Row(
            f"cascade agreement ≥ {threshold:.2f} ({len(samples)} samples)", "sim",
            np.where(passed, o.correct[:, s], o.correct[:, w]),
            base_cost + np.where(passed, o.cost[:, s], 0.0),
            base_ms + np.where(passed, o.latency_ms[:, s], 0.0),
            passed, "cascade agreement (sim)",
        ))  # fmt: skip
    return rows


def vote_row(o: Outcomes, name: str, cols: list[int]) -> Row:
    """Majority vote over ``cols`` (members in parallel: cost the sum, latency the max)."""
    winners = [vote([a[c] for c in cols]) for a in o.answers]
    correct = np.array([w >= 0 and o.correct[i, cols[w]] for i, w in enumerate(winners)])
    return Row(name, "sim", correct, o.cost[:, cols].sum(axis=1),
               o.latency_ms[:, cols].max(axis=1), None)  # fmt: skip


def vote_rows(o: Outcomes) -> list[Row]:
    rows = []
    if len(o.members) > len(MODELS):
        rows.append(vote_row(o, f"vote: all {len(o.members)} members", list(range(len(o.members)))))
    for model in MODELS:
        cols = [o.column(model), *sampled_columns(o, model)]
        if len(cols) > 1:
            rows.append(vote_row(o, f"vote: {model} greedy + {len(cols) - 1} samples", cols))
    return rows


def ceiling_row(o: Outcomes) -> Row:
    """Any member right (not a strategy: what a perfect pick among all members reaches)."""
    every = list(range(len(o.members)))
    return Row(f"bound: any of the {len(o.members)} members right", "bound", o.correct.any(axis=1),
               o.cost[:, every].sum(axis=1), o.latency_ms[:, every].max(axis=1), None)  # fmt: skip


# -- rows from the broker's runs ----------------------------------------------------------

ORACLE = "oracle router"
GENERATING_ROLES = ("answer", "sample", "aggregator")


def broker_rows(o: Outcomes, pair: Pair, runs: list[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows of ``run``'s strategies (one per strategy and willingness to pay) over the
    collected questions; a strategy that failed or did not answer every question is a note."""
    groups: dict[tuple[str, float | None], dict[str, dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["strategy"], r.get("wtp")), {})[r["id"]] = r
    rows, notes = [], []
    for (name, wtp), by_id in groups.items():
        label = name if wtp is None else f"{name} (wtp {wtp:g})"
        errors = Counter(r["error"] for r in by_id.values() if r.get("error"))
        missing = [i for i in o.ids if i not in by_id or by_id[i].get("error")]
        if missing:
            why = "; ".join(f"{n}x {e}" for e, n in errors.most_common(2)) or "not run"
            notes.append(f"{label}: {len(o.ids) - len(missing)}/{len(o.ids)} answered ({why})")
            continue
        got = [by_id[i] for i in o.ids]
        strong = np.array([
            any(m["model"] == pair.strong and m["role"] in GENERATING_ROLES for m in r["members"])
            for r in got
        ])  # fmt: skip
        ensemble = name.startswith("vote")
        rows.append(Row(
            label, "broker", np.array([bool(r["correct"]) for r in got]),
            np.array([r["cost"] for r in got]), np.array([r["latency_ms"] for r in got]),
            None if ensemble else strong, "" if ensemble else curve_of(name),
        ))  # fmt: skip
    return rows, notes


def curve_of(strategy: str) -> str:
    """Strategies swept along one curve: the learned route over willingness to pay, the
    confidence cascade over its thresholds."""
    if strategy == "learned":
        return "learned router (broker)"
    if strategy.startswith("cascade-confidence"):
        return "cascade confidence (broker)"
    return ""


# -- the table and the plot -----------------------------------------------------------------


def measure(rows: list[Row], pair: Pair) -> list[dict[str, Any]]:
    """Each row's numbers; CPT and APGR over the curve its sweep draws (or its one point;
    none for the single models, the curve's ends); the share of the gap from the best single
    model to the oracle router that the row recovers (issue 17's router target)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.strong is not None and row.source != "collected":
            key = row.curve or row.name
            points.setdefault(key, []).append((float(row.strong.mean()), float(row.correct.mean())))
    best = max(pair.weak_acc, pair.strong_acc)
    ceiling = next((float(r.correct.mean()) for r in rows if r.name == ORACLE), math.nan)
    out = []
    for row in rows:
        acc = float(row.correct.mean())
        m: dict[str, Any] = {
            "name": row.name,
            "source": row.source,
            "n": len(row.correct),
            "accuracy": acc,
            "cost": float(row.cost.sum()),
            "cost_share": float(row.cost.sum()) / pair.strong_cost,
            "latency_p50_ms": float(np.percentile(row.latency_ms, 50)),
            "pgr": pgr(acc, pair.weak_acc, pair.strong_acc),
            "oracle_gap": pgr(acc, best, ceiling),
            "strong_calls": None if row.strong is None else float(row.strong.mean()),
            "curve": row.curve,
        }
        if row.strong is not None and row.source != "collected":
            line = points[row.curve or row.name]
            m["cpt50"] = cpt(line, pair.weak_acc, pair.strong_acc, 0.5)
            m["cpt80"] = cpt(line, pair.weak_acc, pair.strong_acc, 0.8)
            m["apgr"] = apgr(line, pair.weak_acc, pair.strong_acc)
        out.append(m)
    return out


def fmt(value: float | None, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def table(measured: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | source | accuracy | cost | cost % of strong | p50 ms | strong calls "
        "| PGR | oracle gap rec. | CPT(50%) | CPT(80%) | APGR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measured:
        calls = "-" if m["strong_calls"] is None else f"{100 * m['strong_calls']:.0f} %"
        lines.append(
            f"| {m['name']} | {m['source']} | {m['accuracy']:.3f} | {m['cost']:.5f} | "
            f"{100 * m['cost_share']:.0f} % | {m['latency_p50_ms']:.0f} | {calls} | "
            f"{fmt(m['pgr'], '.2f')} | {fmt(m['oracle_gap'], '.2f')} | "
            f"{fmt(m.get('cpt50'), '.2f')} | {fmt(m.get('cpt80'), '.2f')} | "
            f"{fmt(m.get('apgr'), '.2f')} |"
        )
    return "\n".join(lines)


def definitions(pair: Pair, n: int) -> str:
    prices = "; ".join(
        f"{m} {p.prompt_per_1k:g}/{p.completion_per_1k:g}" for m, p in PRICES.items()
    )
    text = (
        f"{n} test questions. Prices per 1k prompt/completion tokens: {prices} (Gemma 2x "
        "SmolLM2, the ratio of their parameter counts). cost = the sum over the questions, "
        f"in that price unit; cost % = of the strong model's. weak = {pair.weak} "
        f"({pair.weak_acc:.3f}, the cheaper), strong = {pair.strong} ({pair.strong_acc:.3f}, "
        "the more accurate). PGR = (accuracy - weak) / (strong - weak); oracle gap rec. = "
        "(accuracy - best single) / (oracle router - best single), issue 17's router target. "
        "strong calls = share "
        "of questions on which the strong model generated (RouteLLM's % calls to the strong "
        "model). CPT(x) = fewest strong calls reaching PGR x and APGR = area under PGR over "
        "strong calls 0..1, on the curve through all-weak, the row's sweep (or its one point) "
        "and all-strong, straight lines between (a random mix of two settings reaches any point "
        "between them). Ensembles call every member: no curve. p50 ms = the client's latency per "
        "question (sim rows: the members' collected latencies; votes: the slowest member, as "
        "if in parallel; cascades: the stages' sum). sim = replayed from the collected answers "
        "(exact for the oracle and the rule router: greedy answers repeat), broker = "
        "`strategies.py run` through the real broker."
    )
    return text + (f"\n\nNote: {pair.note}." if pair.note else "")


def plot(measured: list[dict[str, Any]], pair: Pair, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    markers = {"collected": "s", "sim": "o", "broker": "D", "bound": "x"}
    curves: dict[str, list[tuple[float, float]]] = {}
    for m in measured:
        x, y = 100 * m["cost_share"], 100 * m["accuracy"]
        ax.scatter([x], [y], marker=markers.get(m["source"], "o"), s=40, zorder=3)
        ax.annotate(m["name"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if m["curve"]:
            curves.setdefault(m["curve"], []).append((x, y))
    for name, line in curves.items():
        xs, ys = zip(*sorted(line), strict=True)
        ax.plot(xs, ys, linewidth=1, label=name)
    ax.axhline(100 * pair.strong_acc, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xlabel(f"cost, % of the strong model's ({pair.strong})")
    ax.set_ylabel("accuracy on ridgeline-qa-v1 test, %")
    ax.set_title(
        "Strategies: cost against accuracy (squares: single, dots: sim, diamonds: broker, x: bound)"
    )
    if curves:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def targets(measured: list[dict[str, Any]], pair: Pair) -> list[str]:
    """Issue 17's targets, per row that can meet them."""
    best = max(pair.weak_acc, pair.strong_acc)
    singles = {m["name"]: m for m in measured if m["source"] == "collected"}
    lines: list[str] = []
    seen_learned: set[str] = set()
    for m in measured:
        if m["name"].startswith("learned") and m["name"] not in seen_learned:
            sweep = [x for x in measured if x["curve"] and x["curve"] == m["curve"]] or [m]
            seen_learned.update(x["name"] for x in sweep)
            recovered = max(x["oracle_gap"] for x in sweep)
            lines.append(f"- {m['curve'] or m['name']}: APGR {fmt(m.get('apgr'), '.2f')}, at best "
                         f"{fmt(recovered, '.2f')} of the gap from the best single model to the "
                         f"oracle recovered (target ≥ 0.5): "
                         f"{'PASS' if recovered >= 0.5 else 'MISS'}")  # fmt: skip
        if m["name"].startswith("cascade"):
            ok = m["accuracy"] >= pair.strong_acc and m["cost_share"] <= 0.6
            lines.append(f"- {m['name']} ({m['source']}): accuracy {m['accuracy']:.3f} vs strong "
                         f"{pair.strong_acc:.3f} at {100 * m['cost_share']:.0f} % of its cost "
                         f"(target: ≥ strong at ≤ 60 %): {'PASS' if ok else 'MISS'}")  # fmt: skip
        if m["name"].startswith("vote"):
            gain = m["accuracy"] - best
            lines.append(f"- {m['name']} ({m['source']}): {100 * gain:+.1f} points over the best "
                         f"single model ({best:.3f}) (target ≥ +3): "
                         f"{'PASS' if gain >= 0.03 else 'MISS'}")  # fmt: skip
    weak_m = next((m for m in measured if m["name"] == f"single: {pair.weak}"), None)
    if weak_m:
        lines.append(f"- cost floor of a cascade {pair.weak} -> {pair.strong}: the first stage "
                     f"alone costs {100 * weak_m['cost_share']:.0f} % of the strong model "
                     "(prompt tokens dominate: same chat, 2x price per token)")  # fmt: skip
    oracle_m = next((m for m in measured if m["name"] == ORACLE), None)
    if oracle_m:
        lines.append(f"- ceiling: the oracle router reaches {oracle_m['accuracy']:.3f} "
                     f"({100 * (oracle_m['accuracy'] - best):+.1f} points over the best "
                     f"single, {', '.join(singles)}); see the yes/no note below")  # fmt: skip
    return lines


def per_kind(o: Outcomes) -> str:
    """Accuracy of every member per kind of question (and the oracle's): where the models
    differ is what a router can use."""
    cols = [o.column(m) for m in MODELS]
    either = o.correct[:, cols].any(axis=1)
    head = "| kind | n | " + " | ".join(o.members) + " | either greedy model |"
    lines = [head, "|---|---:|" + "---:|" * (len(o.members) + 1)]
    for kind in [*sorted(set(o.kinds)), "all"]:
        rows = np.array([kind in ("all", k) for k in o.kinds])
        cells = [f"{o.correct[rows, c].mean():.2f}" for c in range(len(o.members))]
        lines.append(f"| {kind} | {rows.sum()} | {' | '.join(cells)} | {either[rows].mean():.2f} |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    test = load_outcomes("test", args.out)
    pair = pair_of(test)
    rows = [*single_rows(test, pair), oracle_row(test, pair), oracle_without_yes_no(test, pair)]
    notes: list[str] = [polar_answers(test)]
    if outcome_files("train", args.out)[0].exists():
        rules = kind_rules(load_outcomes("train", args.out))
        rows.append(rules_row(test, pair, rules))
        notes.append("rule router's rules (fitted on train): "
                     + ", ".join(f"{k} -> {m}" for k, m in rules.items()))  # fmt: skip
    else:
        notes.append("rule router: no train outcomes to fit its rules (collect train)")
    rows += agreement_cascade_rows(test, pair) + vote_rows(test)
    brokered, missing = broker_rows(test, pair, read_jsonl(args.out / "runs-test.jsonl"))
    rows += brokered
    notes += missing or (
        [] if brokered else ["broker strategies: not run yet (`strategies.py run`)"]
    )
    rows.append(ceiling_row(test))
    measured = measure(rows, pair)
    text = "\n\n".join([
        f"$ {command_line()}", definitions(pair, len(test.ids)), table(measured),
        "Targets of issue 17:\n" + "\n".join(targets(measured, pair)),
        "Accuracy per kind of question (test):\n\n" + per_kind(test),
        *(["Notes:\n" + "\n".join(f"- {n}" for n in notes)] if notes else []),
    ])  # fmt: skip
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "strategies.md").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "strategies.json").write_text(json.dumps(
        {"command": command_line(), "pair": pair.__dict__, "rows": measured, "notes": notes},
        indent=2, default=str) + "\n")  # fmt: skip
    plot(measured, pair, RESULTS / "strategies.png")
    print("\nwrote benchmarks/results/strategies.{md,json,png}", file=sys.stderr)


# -- run: the broker's strategies -----------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for these simple values
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def strategy_specs(
    args: argparse.Namespace, rules: dict[str, str], router_file: Path | None
) -> list[dict[str, Any]]:
    """The named strategies ``run`` measures (seam.md's ``[[strategies]]`` format)."""
    weak, strong = MODELS  # by price: cascades go cheapest first
    sampled = {"samples": args.samples + 1, "temperature": args.temperature}
    specs: list[dict[str, Any]] = [
        {"name": "rules", "kind": "route", "models": list(MODELS), "router": "rules",
         "rules": [{"task": kind, "model": model} for kind, model in rules.items()]},
    ]  # fmt: skip
    if router_file is not None:
        specs.append({"name": "learned", "kind": "route", "models": list(MODELS),
                      "router": "learned", "router_file": str(router_file)})  # fmt: skip
    for threshold in args.thresholds:
        specs.append({"name": f"cascade-confidence-{round(100 * threshold)}", "kind": "cascade",
                      "models": [weak, strong], "verifier": "confidence",
                      "threshold": threshold})  # fmt: skip
    specs += [
        {"name": "cascade-agreement", "kind": "cascade", "models": [weak, strong],
         "verifier": "agreement", "threshold": args.agreement, **sampled},
        {"name": "cascade-verifier", "kind": "cascade", "models": [weak, strong],
         "verifier": f"verifier:{strong}", "threshold": 0.5},
        {"name": "vote", "kind": "ensemble", "models": list(MODELS), "combine": "vote", **sampled},
        *({"name": f"vote-{short}", "kind": "ensemble", "models": [model], "combine": "vote",
           **sampled} for short, model in (("smollm2", SMOLLM2), ("gemma", GEMMA))),
    ]  # fmt: skip
    return [s for s in specs if not args.strategies or s["name"] in args.strategies]


def strategies_toml(specs: list[dict[str, Any]]) -> str:
    """``[prices]`` (from ``PRICES``) and one ``[[strategies]]`` table per spec."""
    lines = ["", "[prices]"]
    for model, price in PRICES.items():
        lines.append(f'"{model}" = {{ prompt_per_1k = {price.prompt_per_1k!r}, '
                     f"completion_per_1k = {price.completion_per_1k!r} }}")  # fmt: skip
    for spec in specs:
        lines += ["", "[[strategies]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in spec.items() if k != "rules"]
        for rule in spec.get("rules", []):
            lines += ["[[strategies.rules]]", *(f"{k} = {toml_value(v)}" for k, v in rule.items())]
    return "\n".join(lines) + "\n"


def train_router(train_file: Path, out: Path, store: Path) -> Path | None:
    """``cloud-broker router train`` on the train outcomes (this checkout's broker, by
    subprocess); None, with the reason printed, when it fails."""
    command = [sys.executable, "-m", "cloud_broker", "router", "train",
               "--outcomes", str(train_file), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RIDGELINE_BROKER_MODELS__STORE_DIR": str(store)}
    print(f"$ {shlex.join(command)}", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        print(f"learned router: not trained (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return None
    return out


def ask_strategy(
    client: Any, item: QAItem, name: str, args: argparse.Namespace, wtp: float | None
) -> dict[str, Any]:
    """One test question through the named strategy; an error is recorded, not raised."""
    from ridgeline_core.client import build_request
    from ridgeline_core.errors import RidgelineError

    request = build_request(messages(item.prompt), max_tokens=args.max_tokens, temperature=0.0,
                            stop=list(STOP))  # fmt: skip
    request.strategy.name = name
    request.strategy.task = item.kind  # a hint the rule router reads; others ignore it
    if wtp is not None:
        request.strategy.willingness_to_pay = wtp
    row: dict[str, Any] = {"strategy": name, "wtp": wtp, "id": item.id, "kind": item.kind}
    started = time.perf_counter()
    text, result = [], None
    try:
        for event in client.generate_request(request):
            if event.HasField("delta"):
                text.append(event.delta.text)
            else:
                result = event.result
    except RidgelineError as exc:
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    if result is None:
        return {**row, "error": "the stream ended without a result"}
    answer = "".join(text)
    return {**row, "answer": answer, "correct": is_correct(answer, item.answers),
            "cost": result.cost, "answer_model": result.answer_model,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "usage": [result.usage.prompt_tokens, result.usage.completion_tokens],
            "members": [member_record(m) for m in result.members],
            "notes": list(result.notes)}  # fmt: skip


def member_record(m: Any) -> dict[str, Any]:
    return {
        "model": m.model,
        "role": m.role,
        "tokens": [m.usage.prompt_tokens, m.usage.completion_tokens],
        "cost": m.cost,
        "latency_ms": round(m.latency_ms, 1),
        "score": m.score if m.HasField("score") else None,
        "vote": m.vote,
        "accepted": m.accepted,
        "note": m.note,
    }


def run_one(
    client: Any, items: list[QAItem], name: str, args: argparse.Namespace, wtp: float | None
) -> list[dict[str, Any]]:
    """Every test question through ``name``; stops at the first question when the broker
    does not know the strategy (the error says why)."""
    label = name if wtp is None else f"{name} wtp={wtp:g}"
    rows, started = [], time.perf_counter()
    for n, item in enumerate(items, 1):
        rows.append(ask_strategy(client, item, name, args, wtp))
        if n == 1 and "error" in rows[0]:
            print(f"  {label}: not measured: {rows[0]['error']}", file=sys.stderr)
            return rows
        if n % 25 == 0 or n == len(items):
            right = sum(bool(r.get("correct")) for r in rows)
            seconds = time.perf_counter() - started
            print(f"  {label}: {n}/{len(items)}, {right} right, {seconds:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    return rows


def wtp_sweep(args: argparse.Namespace) -> list[float]:
    """``--wtp``, else a log sweep around the price of a point of accuracy: the strong
    answer's extra cost per question (from the collected test outcomes) divided by 1..0.01."""
    if args.wtp:
        return args.wtp
    test = load_outcomes("test", args.out)
    extra = float(np.mean(test.cost[:, test.column(GEMMA)] - test.cost[:, test.column(SMOLLM2)]))
    return [0.0, *(float(f"{extra * f:.3g}") for f in (0.5, 1, 2, 4, 8, 16, 32, 100)), 1.0]


def run(args: argparse.Namespace) -> None:
    from ridgeline_core.client import BrokerClient

    train_file = outcome_files("train", args.out)[0]
    rules = kind_rules(load_outcomes("train", args.out))
    items = load_dataset(DATA / "test.jsonl")[: args.limit]
    runs_file = args.out / "runs-test.jsonl"
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        router = None
        if not args.strategies or "learned" in args.strategies:
            router = train_router(train_file, Path(tmp) / "router.json", args.store)
        specs = strategy_specs(args, rules, router)
        extra = strategies_toml(specs)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "strategies-broker.toml").write_text(broker_toml(args.store, extra))
        kept = [r for r in read_jsonl(runs_file) if r["strategy"] not in {s["name"] for s in specs}]
        with broker(args.store, Path(tmp), extra) as address:
            client = BrokerClient(address, plaintext=True, timeout_s=600)
            print_listed(client)
            try:
                for spec in specs:
                    sweep = wtp_sweep(args) if spec["name"] == "learned" else [None]
                    for wtp in sweep:
                        kept += run_one(client, items, spec["name"], args, wtp)
                        runs_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
            finally:
                client.close()
    record = {
        "command": command_line(),
        "commit": git_commit(),
        "strategies": [s["name"] for s in specs],
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    (args.out / "runs.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {runs_file.relative_to(ROOT)}; the broker's config is in "
          "benchmarks/results/strategies-broker.toml; now `strategies.py report`",
          file=sys.stderr)  # fmt: skip


def git_commit() -> str:
    """The checkout's commit (the broker that ran is this checkout's), "" outside git."""
    git = ["git", "-C", str(ROOT)]
    done = subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        return ""
    return done.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def print_listed(client: Any) -> None:
    """What ListModels says the broker serves: the models' prices and the named strategies."""
    listed = client.list_models()
    for model in listed.models:
        print(f"  model {model.name}: {model.prompt_price_per_1k:g}/"
              f"{model.completion_price_per_1k:g} per 1k", file=sys.stderr)  # fmt: skip
    for s in listed.named_strategies:
        print(f"  strategy {s.name}: {list(s.models)} {s.method}", file=sys.stderr)
    if not listed.named_strategies:
        print("  the broker lists no named strategies (strategies not built yet?)", file=sys.stderr)


# -- command line ---------------------------------------------------------------------------


def command_line() -> str:
    python = (
        os.path.relpath(sys.executable)
        if sys.executable.startswith(os.getcwd())
        else sys.executable
    )
    return shlex.join([python, *sys.argv])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    store = os.environ.get("RIDGELINE_TEST_STORE") or str(DEFAULT_STORE)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", type=Path, default=Path(store), help=f"model store ({store})")
    common.add_argument("--out", type=Path, default=OUT, help="outcome and run files")
    common.add_argument("--max-tokens", type=int, default=24)
    c = sub.add_parser("collect", parents=[common], help="answer train and test by every member")
    c.add_argument("--samples", type=int, default=2, help="sampled variants per model")
    c.add_argument("--temperature", type=float, default=0.7, help="of the sampled variants")
    c.add_argument("--splits", default="test,train", help="comma-separated")
    c.add_argument("--sample-splits", default="test", help="splits that get sampled variants")
    c.add_argument("--limit", type=int, help="questions per split (quick runs)")
    c.add_argument("--refresh", action="store_true", help="start the outcome files anew")
    p = sub.add_parser("prompt-check", parents=[common], help="few-shot against none")
    p.add_argument("--limit", type=int, default=30, help="train questions")
    sub.add_parser("report", parents=[common], help="the table and the plot")
    r = sub.add_parser("run", parents=[common], help="every test question through each strategy")
    r.add_argument("--strategies", default="", help="comma-separated names (default: all)")
    r.add_argument("--wtp", default="", help="willingness-to-pay sweep of the learned route")
    r.add_argument("--thresholds", default="0.3,0.5,0.7", help="confidence cascade thresholds")
    r.add_argument("--agreement", type=float, default=0.6, help="agreement cascade threshold")
    r.add_argument("--samples", type=int, default=2, help="samples per model beyond the first")
    r.add_argument("--temperature", type=float, default=0.7)
    r.add_argument("--limit", type=int, help="test questions (quick runs)")
    args = parser.parse_args(argv)
    for name in ("splits", "sample_splits", "strategies"):
        if hasattr(args, name):
            setattr(args, name, [s for s in getattr(args, name).split(",") if s])
    for name in ("wtp", "thresholds"):
        if hasattr(args, name):
            setattr(args, name, [float(s) for s in getattr(args, name).split(",") if s])
    return args


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # the broker is stopped however the run ends
    commands = {"collect": collect, "prompt-check": prompt_check, "report": report, "run": run}
    try:
        commands[args.command](args)
    except RuntimeError as exc:  # the broker did not start: its log says why
        print(f"strategies.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
