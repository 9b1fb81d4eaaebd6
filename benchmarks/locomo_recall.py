"""Retrieval recall on LoCoMo conversations: tiered-memory against dense and BM25 baselines.

Follows the project's retrieval protocol (``../shared/data/locomo/README.md``), no LLM:

- For each conversation, a fresh store (an SQLite file in a temporary directory), one user
  per conversation, one scope session per LoCoMo session. Every turn becomes one memory:
  ``"{speaker}: {text}"`` plus ``" [image: {blip_caption}]"`` when the turn shares a picture,
  with the metadata ``dia_id``, ``session`` (the session number) and ``session_date``
  (the session's date and time as the dataset writes it). Turns go in with ``add_many``, one
  call per session, in conversation order.
- For each question with non-empty evidence and category != 5 (adversarial: the answer is
  not in the conversation), the top 20 memories come from ``Scope.search(question,
  limit=20)``. recall@k = |evidence ∩ retrieved dia_ids| / |evidence|, averaged over the
  questions, for k = 1, 5, 10, 20; hit@5 = share of questions with any evidence in the top 5.
  Evidence ids are used as the dataset writes them (a handful are malformed, e.g.
  ``"D8:6; D9:17"``; they count as misses for every system alike).
- Two baselines run in the same process over the same turns: ``dense`` (all-MiniLM-L6-v2,
  exact cosine with NumPy; turns embedded once per conversation) and ``bm25`` (Okapi BM25,
  k1 = 1.2, b = 0.75, over the terms of ``memory.core.text.terms``). Questions are asked of the
  three systems in turn, in a shuffled order per question (``benchmarks/measure.py``), so
  that machine noise hits them alike.
- Latency: wall time around each search, the query's embedding included (the library also
  reads its candidates from SQLite; the baselines work on in-memory arrays). The embedder
  runs on one thread by default (``--embedder-threads``): one short query embeds no faster
  on more, and on a busy machine one thread per core waits on the cores other processes
  hold (measured here with PyTorch on 2 loaded cores: p50 152 ms with 2 threads, 23 ms
  with 1).

Figures are reported over all conversations and separately for a tuning split and a held-out
split (``--holdout``, default conv-42 and conv-43: the conversations the scoring was *not*
tuned on).

Run (from the repository root)::

    .venv/bin/python benchmarks/locomo_recall.py --data ../shared/data/locomo/locomo_dev.json

Output: a table, then one JSON line per system (``grep '^{'``)::

    {"system": "tiered-memory", "overall": {"recall@1": ..., "recall@5": ..., "recall@10": ...,
     "recall@20": ..., "hit@5": ...}, "by_category": {"1": {...}, ...},
     "search_ms": {"p50": ..., "p95": ...}, "questions": ..., "by_split": {...}}

The dataset is CC BY-NC 4.0: it is read from the path given, never copied into the project.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from measure import emit, shuffled_rounds, summary, table, timed

from memory import Memory, MiniLMEmbedder, Scope
from memory.core.text import terms

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
DEFAULT_HOLDOUT = ("conv-42", "conv-43")
KS = (1, 5, 10, 20)
LIMIT = max(KS)
AGENT = "locomo"
BM25_K1 = 1.2
BM25_B = 0.75
# The category numbers of the LoCoMo release, with the names commonly given to them.
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
SYSTEMS = ("tiered-memory", "dense", "bm25")
TARGETS = {"recall@10": 0.70, "recall@5": 0.60}


# -- the data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    session: int
    date: str
    content: str


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    sample_id: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]


def load(path: Path) -> list[Conversation]:
    """The conversations of a LoCoMo JSON file, with the questions the protocol keeps."""
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle)
    conversations = []
    for item in raw:
        body = item["conversation"]
        numbers = sorted(
            int(key.removeprefix("session_"))
            for key, value in body.items()
            if key.startswith("session_") and isinstance(value, list)
        )
        turns = []
        for number in numbers:
            date = str(body.get(f"session_{number}_date_time", ""))
            for turn in body[f"session_{number}"]:
                content = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    content += f" [image: {turn['blip_caption']}]"
                turns.append(Turn(str(turn["dia_id"]), number, date, content))
        questions = tuple(
            Question(str(qa["question"]), int(qa["category"]), tuple(map(str, qa["evidence"])))
            for qa in item["qa"]
            if qa.get("evidence") and qa.get("category") != 5
        )
        conversations.append(Conversation(str(item["sample_id"]), tuple(turns), questions))
    return conversations


# -- the systems -----------------------------------------------------------------------------------

Retrieve = Callable[[str], list[str]]  # question -> dia_ids of the top LIMIT memories, best first


def ingest(scope_for: Callable[[str], Scope], conversation: Conversation) -> dict[int, list[str]]:
    """Store every turn (one ``add_many`` per session); memory id -> the dia_ids it holds.

    A session that repeats a turn's exact text stores it once (the store de-duplicates by
    content within a scope); that memory then stands for every turn that said it.
    """
    by_session: dict[int, list[Turn]] = {}
    for turn in conversation.turns:
        by_session.setdefault(turn.session, []).append(turn)
    dia_ids: dict[int, list[str]] = {}
    for number, turns in by_session.items():
        records = scope_for(f"session_{number}").add_many(
            {
                "content": turn.content,
                "tier": "episodic",
                "metadata": {"dia_id": turn.dia_id, "session": number, "session_date": turn.date},
            }
            for turn in turns
        )
        for record, turn in zip(records, turns, strict=True):
            dia_ids.setdefault(record.id, []).append(turn.dia_id)
    return dia_ids


def library_system(scope: Scope, dia_ids: dict[int, list[str]]) -> Retrieve:
    def retrieve(question: str) -> list[str]:
        hits = scope.search(question, limit=LIMIT)
        return [dia_id for hit in hits for dia_id in dia_ids[hit.memory.id]]

    return retrieve


def dense_system(embedder: MiniLMEmbedder, turns: Sequence[Turn]) -> Retrieve:
    matrix = embedder.embed([turn.content for turn in turns])  # unit vectors
    ids = [turn.dia_id for turn in turns]

    def retrieve(question: str) -> list[str]:
        scores = matrix @ embedder.embed([question])[0]
        order = np.argsort(-scores, kind="stable")[:LIMIT]
        return [ids[i] for i in order]

    return retrieve


class BM25:
    """Okapi BM25 over ``memory.core.text.terms``; idf = ln(1 + (N - df + 0.5) / (df + 0.5))."""

    def __init__(self, documents: Iterable[str], k1: float = BM25_K1, b: float = BM25_B) -> None:
        self.k1, self.b = k1, b
        self.counts = [Counter(terms(text)) for text in documents]
        self.lengths = [sum(counts.values()) for counts in self.counts]
        self.average = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        self.postings: dict[str, list[int]] = {}
        for position, counts in enumerate(self.counts):
            for term in counts:
                self.postings.setdefault(term, []).append(position)

    def scores(self, query: str) -> dict[int, float]:
        total = len(self.counts)
        scores: dict[int, float] = {}
        for term in dict.fromkeys(terms(query)):
            postings = self.postings.get(term, [])
            if not postings:
                continue
            idf = math.log(1 + (total - len(postings) + 0.5) / (len(postings) + 0.5))
            for position in postings:
                frequency = self.counts[position][term]
                norm = self.k1 * (1 - self.b + self.b * self.lengths[position] / self.average)
                scores[position] = scores.get(position, 0.0) + idf * frequency * (self.k1 + 1) / (
                    frequency + norm
                )
        return scores


def bm25_system(turns: Sequence[Turn]) -> Retrieve:
    index = BM25(turn.content for turn in turns)
    ids = [turn.dia_id for turn in turns]

    def retrieve(question: str) -> list[str]:
        scores = index.scores(question)
        order = sorted(scores, key=lambda position: (-scores[position], position))[:LIMIT]
        return [ids[i] for i in order]

    return retrieve


# -- measuring -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    conversation: str
    category: int
    recall: dict[int, float]
    hit5: bool
    ms: float


@dataclass(slots=True)
class Results:
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    def add(self, system: str, outcome: Outcome) -> None:
        self.outcomes.setdefault(system, []).append(outcome)


def score(question: Question, retrieved: list[str], ms: float, sample: str) -> Outcome:
    evidence = set(question.evidence)
    recall = {k: len(evidence & set(retrieved[:k])) / len(evidence) for k in KS}
    hit5 = bool(evidence & set(retrieved[:5]))
    return Outcome(sample, question.category, recall, hit5, ms)


def quality(outcomes: Sequence[Outcome]) -> dict[str, float]:
    if not outcomes:
        return {}
    figures = {f"recall@{k}": statistics.fmean(o.recall[k] for o in outcomes) for k in KS}
    figures["hit@5"] = statistics.fmean(float(o.hit5) for o in outcomes)
    return {name: round(value, 4) for name, value in figures.items()}


def report(system: str, outcomes: Sequence[Outcome], holdout: Sequence[str]) -> dict[str, Any]:
    categories = sorted({o.category for o in outcomes})
    tune = [o for o in outcomes if o.conversation not in holdout]
    held = [o for o in outcomes if o.conversation in holdout]
    return {
        "system": system,
        "overall": quality(outcomes),
        "by_category": {
            str(c): quality([o for o in outcomes if o.category == c]) for c in categories
        },
        "search_ms": summary([o.ms for o in outcomes], ("p50", "p95"), unit="", digits=2),
        "questions": len(outcomes),
        "by_split": {
            "tune": {"conversations": sorted({o.conversation for o in tune}), **quality(tune)},
            "held_out": {"conversations": sorted({o.conversation for o in held}), **quality(held)},
        },
    }


def run(
    conversations: Sequence[Conversation],
    systems: Sequence[str],
    embedder: MiniLMEmbedder,
    progress: Callable[[str], None] = lambda line: None,
) -> Results:
    results = Results()
    rng = random.Random(0)
    for conversation in conversations:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="locomo-") as directory:
            url = f"sqlite:///{Path(directory) / 'memory.db'}"
            with Memory.open(url, embedder=embedder) as memory:
                user = conversation.sample_id
                retrieve: dict[str, Retrieve] = {}
                if "tiered-memory" in systems:
                    dia_ids = ingest(functools.partial(memory.scope, user, AGENT), conversation)
                    retrieve["tiered-memory"] = library_system(memory.scope(user, AGENT), dia_ids)
                if "dense" in systems:
                    retrieve["dense"] = dense_system(embedder, conversation.turns)
                if "bm25" in systems:
                    retrieve["bm25"] = bm25_system(conversation.turns)
                ingested = time.perf_counter() - started
                orders = shuffled_rounds(systems, len(conversation.questions), rng)
                for question, order in zip(conversation.questions, orders, strict=True):
                    for system in order:
                        found, timing = timed(retrieve[system], question.text)
                        results.add(
                            system, score(question, found, timing.wall, conversation.sample_id)
                        )
        progress(
            f"{conversation.sample_id}: {len(conversation.turns)} turns, "
            f"{len(conversation.questions)} questions, ingest+index {ingested:.1f} s, "
            f"total {time.perf_counter() - started:.1f} s"
        )
    return results


# -- output ----------------------------------------------------------------------------------------


def tables(reports: Sequence[dict[str, Any]], categories: Sequence[int]) -> str:
    columns = [*(f"recall@{k}" for k in KS), "hit@5"]
    lines = []

    def block(title: str, figures: Sequence[dict[str, Any]], names: Sequence[str] = columns,
              digits: int = 3) -> None:  # fmt: skip
        rows = [
            [r["system"], *(row.get(name, math.nan) for name in names)]
            for r, row in zip(reports, figures, strict=True)
        ]
        text = table(["system", *names], rows, digits)
        lines.extend([f"\n{title}", textwrap.indent(text, "  ")])

    block("overall (all conversations)", [r["overall"] for r in reports])
    for name, label in (("tune", "tuning split"), ("held_out", "held-out split")):
        conversations = ", ".join(reports[0]["by_split"][name]["conversations"]) or "none"
        block(f"{label} ({conversations})", [r["by_split"][name] for r in reports])
    for category in categories:
        label = CATEGORY_NAMES.get(category, "?")
        block(f"category {category} ({label})", [r["by_category"][str(category)] for r in reports])
    block("search latency (ms, query embedding included)", [r["search_ms"] for r in reports],
          ("p50", "p95"), digits=2)  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--conversations", default="", help="comma-separated sample ids (default: all)"
    )
    parser.add_argument(
        "--holdout",
        default=",".join(DEFAULT_HOLDOUT),
        help="comma-separated sample ids reported as the held-out split (default: %(default)s)",
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--embedder-threads",
        type=int,
        default=1,
        help="MiniLMEmbedder(threads=N); 0 is one per core (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON lines to this file")
    args = parser.parse_args(argv)

    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    conversations = load(args.data)
    wanted = {s for s in args.conversations.split(",") if s}
    if wanted:
        conversations = [c for c in conversations if c.sample_id in wanted]
    if not conversations:
        parser.error("no conversations to run")
    holdout = [s for s in args.holdout.split(",") if s]

    embedder = MiniLMEmbedder(threads=args.embedder_threads or None)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run(conversations, systems, embedder, progress)
    reports = [report(system, results.outcomes[system], holdout) for system in systems]
    categories = sorted({q.category for c in conversations for q in c.questions})
    print(tables(reports, categories))
    print()
    lines = [emit(r) for r in reports]
    if args.json is not None:
        args.json.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ours = next((r for r in reports if r["system"] == "tiered-memory"), None)
    if ours is not None:
        missed = [
            f"{name} {ours['overall'][name]:.3f} < {target:.2f}"
            for name, target in TARGETS.items()
            if ours["overall"][name] < target
        ]
        print(
            "targets: " + ("met" if not missed else "missed: " + "; ".join(missed)),
            file=sys.stderr,
        )
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
