"""Retrieval latency and scale: search and inject at 10k, 100k and 1M memories per user.

For one user holding SIZE memories (plus 4 other users with 2 % of SIZE each, so the
store is shared), per backend and size:

- ``Scope.search`` (hybrid, limit 10) and ``Scope.inject`` (budget 512) p50 / p95, each
  call with a new question, so the query embedding (MiniLM, through the library) is
  always included and no result cache can answer;
- two baselines measured in the same run, interleaved with them in a shuffled order per
  round so that machine noise hits all alike: the query embedding alone, the vector step
  alone (``memory.search.vectors``: the quantized scan of the index the library holds and the
  exact scores of its best, read from the database) and the keyword step alone
  (``memory.search.postings``: BM25 over the user's term postings, and the best matches the
  reader may see), each for as many candidates as a search of limit 10 asks;
- the first search after opening the store (which loads the in-process vector index);
- ingestion through the real embedder: ``Scope.add_many`` in batches of 500, next to the
  model alone embedding the same batches;
- memory used by the index: ``index_bytes()`` (the arrays, vectors and terms) and the deep
  size of the user's index objects (arrays, the id maps, the session order, the term
  vocabulary), per memory.

Data (``--seed`` makes it reproducible): realistic memory sentences from templates and
word lists ("The billing service in Atlas hit a memory leak in staging; we fixed it by
adding an index on the orders table."), questions from question templates over the same
words. A pool of ``--pool`` distinct sentences is embedded once with MiniLM (cached in
``--cache-dir``); every bulk memory is a pool sentence plus a unique reference ("(ticket
ATL-104523)"), and its vector the pool sentence's vector plus a little noise (cosine ~0.95
to it), so 1M memories need no hour of embedding. Bulk rows go straight into the
library's tables, as ``Store.add_memories`` writes them (memories, metadata, terms and
the FTS5 triggers, embeddings, the change log). Then, through the public API: preferences,
code patterns, a session checkpoint and 20 working memories in the session ``inject``
uses. Ingestion writes into another user, so it does not grow the measured index.

Run from the repository root (see benchmarks/README.md)::

    .venv/bin/python benchmarks/retrieval_latency.py                      # everything
    .venv/bin/python benchmarks/retrieval_latency.py --backends sqlite --sizes 100000

PostgreSQL: a throwaway database ``membench_<random>`` is created through ``--postgres-url``
and dropped ``WITH (FORCE)`` at the end, even on error or SIGTERM. Output: a table per
case, a summary, one JSON line per case (``grep '^{'``). Exit status 1 if a target fails.
Targets on this 2-core machine: inject p95 <= 15 ms at 100k (SQLite), search p95 <= 50 ms
at 1M (SQLite), ingestion >= 500 memories/s, index <= 1,600 bytes per memory.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import random
import signal
import string
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import sqlalchemy as sa
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, interleaved, load_average, summary, table, timed

from flags import BUILTIN_FLAGS
from memory import Memory, MiniLMEmbedder
from memory.core.inputs import canonical_json, content_hash
from memory.core.text import terms
from memory.search.retriever import KEYWORD_KEPT, VECTOR_CANDIDATES
from memory.search.snapshots import CACHE_DIR_ENV
from memory.search.vectors import ProcessVectors
from memory.store.indexing import terms_row
from memory.store.tables import Base

USER = "bench-user"
INGEST_USER = "bench-ingest"
AGENT = "assistant"
LIVE_SESSION = "s-live"
AGENTS = (("assistant", 0.70), ("planner", 0.15), ("coder", 0.10), ("reviewer", 0.05))
SESSION_LENGTH = 40
NOISE_SIGMA = 0.33  # noise norm per vector: cosine to the pool vector ~ 1/sqrt(1 + s^2)
OTHER_USERS = 4
OTHER_USER_SHARE = 0.02
SEARCH_LIMIT = 10
WARMUP = 10

TARGET_INJECT_P95_MS = 15.0  # at 100k on SQLite
TARGET_SEARCH_P95_MS = 50.0  # at 1M on SQLite
TARGET_INGEST_PER_S = 500.0
TARGET_INDEX_BYTES = 1600.0  # "1.6 KB" per memory, read strictly as 1,600 bytes

memories_t = Base.metadata.tables["memories"]
metadata_t = Base.metadata.tables["memory_metadata"]
terms_t = Base.metadata.tables["memory_terms"]
embeddings_t = Base.metadata.tables["memory_embeddings"]
changes_t = Base.metadata.tables["memory_changes"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- synthetic corpus -----------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split("|"))


WORDS: dict[str, tuple[str, ...]] = {
    "person": _words(
        "Ada|Grace|Linus|Margaret|Alan|Barbara|Ken|Dennis|Frances|Edsger|Radia|Hedy|Guido|"
        "Bjarne|Anita|Katherine|Tim|Vint|Sophie|Priya|Mateo|Chen|Fatima|Olu|Ingrid|Kenji|"
        "Lucia|Noah|Amara|Tomas|Yara|Dmitri|Elena|Kwame|Hana|Rafael|Zoe|Omar"
    ),
    "project": _words(
        "Atlas|Borealis|Cobalt|Driftwood|Ember|Falcon|Granite|Harbor|Ironbark|Juniper|"
        "Kestrel|Lumen|Meridian|Nimbus|Orchard|Pioneer|Quartz|Redwood|Sierra|Tundra|Umber|"
        "Vesper|Willow|Zephyr"
    ),
    "service": _words(
        "billing|checkout|search|auth|notification|inventory|reporting|ingest|payments|"
        "recommendation|gateway|scheduler|export|analytics|email|profile|shipping|pricing|"
        "catalog|media"
    ),
    "env": _words(
        "staging|production|the dev cluster|the canary pool|eu-west|us-east|"
        "the load-test environment"
    ),
    "problem": _words(
        "memory leak|race condition|timeout|deadlock|flaky test|slow query|"
        "certificate expiry|disk full error|null pointer exception|rate limit|schema drift|"
        "stale cache|retry storm|connection pool exhaustion|off-by-one bug|encoding bug|"
        "clock skew|DNS failure|CPU spike"
    ),
    "fix": _words(
        "adding an index on the orders table|raising the pool size to forty|"
        "pinning the client library|rolling back the last release|"
        "adding exponential backoff|caching the token for five minutes|"
        "splitting the batch job in two|rewriting the query with a join|"
        "upgrading the database driver|moving the work off the request thread|"
        "renewing the certificate automatically|adding a circuit breaker|"
        "deleting the stale cache keys|sharding the queue by customer|"
        "increasing the timeout to thirty seconds|fixing the time zone conversion"
    ),
    "language": _words("Python|TypeScript|Go|Rust|Java|Kotlin|Ruby|SQL|Swift|Elixir"),
    "library": _words(
        "SQLAlchemy|FastAPI|Pydantic|React|Django|pytest|Celery|Redis|Kafka|Terraform|"
        "Kubernetes|NumPy|pandas|Playwright|Tokio|gRPC|GraphQL|Prometheus|Grafana|Airflow|"
        "Flask|Spring|Vue|Postgres"
    ),
    "task": _words(
        "background jobs|schema migrations|request validation|load testing|feature flags|"
        "metrics|retries|end-to-end tests|data exports|caching|rate limiting|"
        "structured logging|authentication|PDF generation|image resizing|search indexing|"
        "audit logging|billing reports"
    ),
    "food": _words(
        "ramen|sushi|tacos|falafel|pho|pizza|dumplings|green curry|bibimbap|shakshuka|"
        "pad thai|lasagna|espresso|oat milk lattes|jasmine tea|dark chocolate|croissants|"
        "poke bowls|paella|dim sum"
    ),
    "place": _words(
        "Lisbon|Kyoto|Nairobi|Montreal|Oslo|Buenos Aires|Seoul|Edinburgh|Cape Town|"
        "Vancouver|Berlin|Melbourne|Reykjavik|Mexico City|Singapore|Istanbul|Marrakesh|"
        "Prague|Lima|Hanoi"
    ),
    "weekday": _words("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"),
    "time": _words("9am|half past two|noon|4:30pm|early morning|late evening|8pm"),
    "month": _words(
        "January|February|March|April|May|June|July|August|September|October|November|December"
    ),
    "hobby": _words(
        "bouldering|baking sourdough|trail running|playing chess|watercolor painting|"
        "birdwatching|road cycling|playing jazz piano|gardening|film photography|sailing|"
        "throwing pottery|swimming"
    ),
    "relation": _words(
        "sister|brother|manager|daughter|son|partner|mother|father|cofounder|mentor|flatmate"
    ),
    "allergen": _words("peanuts|shellfish|gluten|lactose|penicillin|cats|pollen"),
    "style": _words("short|detailed|bullet-point|step-by-step|formal|casual"),
    "topic": _words(
        "architecture reviews|code reviews|incident reports|travel plans|budgets|hiring|"
        "roadmaps|database design|API design|performance tuning|security audits|"
        "release notes"
    ),
    "meeting": _words(
        "design review|sprint planning|one-on-one|retrospective|launch sync|budget review|"
        "architecture council|customer call|postmortem|quarterly planning"
    ),
    "tool": _words(
        "VS Code|Neovim|IntelliJ|tmux|zsh|Docker|Postman|Figma|Notion|Linear|Jira|"
        "GitHub Actions|Emacs"
    ),
    "setting": _words(
        "dark mode|tabs over spaces|a 100 column limit|vim keybindings|ligature fonts|"
        "format on save|type hints everywhere|squash merges|a light theme|"
        "two-space indentation"
    ),
}

MEMORY_TEMPLATES = (
    "{person} prefers {style} answers when we discuss {topic}.",
    "The {service} service in {project} hit a {problem} in {env}; we fixed it by {fix}.",
    "Decided to use {library} for {task} in the {project} {language} codebase.",
    "{person} asked me to schedule the {meeting} with {person2} on {weekday} at {time}.",
    "Remember that {person}'s {relation} is allergic to {allergen}.",
    "{person} loves {food} and usually orders it on {weekday} evenings.",
    "{person} is planning a trip to {place} in {month} and wants a hotel near the old town.",
    "{person} is learning {language} and wants examples that use {library}.",
    "Deploys of {project} to {env} need approval from {person} after the {meeting}.",
    "The {task} code in {project} should be rewritten because of a recurring {problem}.",
    "{person} spends weekends {hobby} and mentioned a trip to {place} in {month}.",
    "Use {setting} in {tool}; {person} finds anything else distracting.",
    "Last {weekday} the {service} dashboard showed a {problem} during the {meeting}.",
    "{person} wants a weekly summary of the {project} roadmap every {weekday} morning.",
    "The {project} budget for {topic} was approved by {person} in {month}.",
    "{person}'s favourite city is {place}, mostly because of the {food}.",
    "When writing {language}, {person} wants {setting} and tests with {library}.",
    "Migrate the {service} service from {library} to {library2} before the end of {month}.",
    "{person} reported that {task} in {project} is slow on {env} since the last release.",
    "The on-call runbook for {service} says to check the {problem} alerts first.",
    "{person} does not drink coffee after {time}; suggest {food} instead.",
    "We agreed with {person} that {project} will ship {task} support in {month}.",
    "{person} prefers meetings on {weekday} and never before {time}.",
    "The {meeting} notes say {person2} owns the {service} {problem} follow-up.",
    "{person} keeps a {hobby} journal and asked for a reminder every {weekday}.",
    "The {service} team moved {task} for {project} to {library} after the {problem}.",
    "{person} was annoyed that the {meeting} ran late again; keep agendas short.",
    "{person} booked flights to {place} for the {project} offsite in {month}.",
    "For {topic}, {person} likes {style} documents with a summary at the top.",
    "{person2} reviewed the {language} pull request for {task} and asked for more tests.",
    "The {project} {service} latency doubled in {env} after we upgraded {library}.",
    "{person} uses {tool} with {setting} and hates pop-up notifications.",
    "Our {project} postmortem blamed a {problem} in the {service} service on {weekday}.",
    "{person} is vegetarian but eats {food} when travelling in {place}.",
    "Send {person} the {topic} draft before the {meeting} on {weekday}.",
    "{person}'s {relation} lives in {place} and visits every {month}.",
    "The {library} upgrade in {project} broke {task}; {person} pinned the old version.",
    "{person} wants alerts for the {service} {problem} routed to the {project} channel.",
    "Every {weekday} at {time} {person} runs the {meeting} for {project}.",
    "{person} said the {language} style guide for {project} requires {setting}.",
)

QUESTION_TEMPLATES = (
    "What kind of answers does {person} prefer for {topic}?",
    "How did we fix the {problem} in the {service} service?",
    "Which library did we pick for {task} in {project}?",
    "When is the {meeting} with {person}?",
    "What is {person}'s {relation} allergic to?",
    "What food does {person} like to order?",
    "Where is {person} travelling in {month}?",
    "Who approves {project} deploys to {env}?",
    "What does {person} do on weekends?",
    "Which editor settings does {person} want in {tool}?",
    "Why is {task} slow in {project} on {env}?",
    "What should I check first when the {service} service is paging?",
    "When will {project} ship {task} support?",
    "What happened to the {service} dashboard during the {meeting}?",
    "Who approved the {project} budget for {topic}?",
    "Which city does {person} like best?",
    "What did we decide about migrating {service} off {library}?",
    "Does {person} drink coffee in the afternoon?",
    "Which day does {person} prefer for meetings?",
    "Who owns the follow-up for the {service} {problem}?",
    "What broke after the {library} upgrade in {project}?",
    "What tests does {person} want for {language} code?",
    "Is there a recurring {problem} in the {task} code of {project}?",
    "Where do the {service} {problem} alerts go?",
    "What did the {project} postmortem say about the {problem}?",
    "What should I send {person} before the {meeting}?",
    "Which {language} style rules apply to {project}?",
    "When does {person}'s {relation} visit?",
    "What is {person} learning at the moment?",
    "Remind me what {person} said about {topic}.",
)

PREFERENCES = {
    "answer_style": "concise, bullet points first",
    "language": "en-GB",
    "editor": {"name": "Neovim", "keybindings": "vim", "theme": "dark"},
    "timezone": "Europe/Lisbon",
    "diet": "vegetarian",
    "code_review": {"max_comments": 10, "tone": "direct"},
}


class Corpus:
    """Seeded generator of memory sentences and questions."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _fill(self, template: str) -> str:
        values: dict[str, str] = {}
        for slot in [name for _, name, _, _ in string.Formatter().parse(template) if name]:
            choices = WORDS[slot.rstrip("0123456789")]
            value = self.rng.choice(choices)
            while value in values.values():  # "{person} ... {person2}": two people
                value = self.rng.choice(choices)
            values[slot] = value
        text = template.format(**values)
        return text[0].upper() + text[1:]

    def sentence(self) -> str:
        return self._fill(self.rng.choice(MEMORY_TEMPLATES))

    def question(self) -> str:
        return self._fill(self.rng.choice(QUESTION_TEMPLATES))

    def distinct(self, count: int, make: Callable[[], str]) -> list[str]:
        found: dict[str, None] = {}
        for _ in range(count * 50):
            found[make()] = None
            if len(found) == count:
                return list(found)
        raise SystemExit(f"the corpus cannot make {count} distinct texts")


def detail(row: int) -> str:
    """A reference unique to ``row`` (ticket, PR, commit, date), so contents are distinct."""
    kind = row % 4
    if kind == 0:
        return f"(ticket {WORDS['project'][row % 24][:3].upper()}-{row + 1000})"
    if kind == 1:
        return f"(PR #{row + 1000})"
    if kind == 2:
        return f"(commit {hashlib.blake2b(str(row).encode(), digest_size=4).hexdigest()})"
    day = datetime(2023, 1, 1) + timedelta(days=row % 900)
    return f"(noted {day:%Y-%m-%d}, ref {row})"


# -- measurement helpers ----------------------------------------------------------------------


def deep_size(root: object) -> int:
    """Bytes held by ``root`` and everything it references (each object counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)  # an ndarray that owns its data includes the buffer
        if isinstance(obj, np.ndarray):
            if obj.base is not None:
                stack.append(obj.base)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(obj.__dict__)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, name) for name in obj.__slots__ if hasattr(obj, name))
    return total


# -- data ---------------------------------------------------------------------------------------


def build_pool(
    embedder: MiniLMEmbedder, size: int, seed: int, cache_dir: str
) -> tuple[list[str], np.ndarray]:
    corpus = Corpus(seed)
    sentences = corpus.distinct(size, corpus.sentence)
    key = hashlib.sha256(json.dumps([embedder.model_name, sentences]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"pool-{size}-{key}.npy"
    if path.exists():
        log(f"pool: {size} sentences, vectors from {path}")
        return sentences, np.load(path)
    log(f"pool: embedding {size} distinct sentences (data preparation, not measured) ...")
    vectors = embedder.embed(sentences)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return sentences, vectors


def _agent(u: float) -> str:
    cumulative = 0.0
    for name, share in AGENTS:
        cumulative += share
        if u < cumulative:
            return name
    return AGENTS[-1][0]


def bulk_load(
    memory: Memory,
    pool: tuple[list[str], np.ndarray],
    user: str,
    count: int,
    first_row: int,
    rng: np.random.Generator,
) -> float:
    """Write ``count`` memories of ``user`` straight into the library's tables, as
    ``Store.add_memories`` does; returns rows per second."""
    sentences, pool_vectors = pool
    model = memory.embedder.model_name if memory.embedder is not None else None
    dimension = pool_vectors.shape[1]
    now = datetime.now(UTC)
    with memory.engine.connect() as connection:
        next_id = int(connection.execute(sa.select(sa.func.max(memories_t.c.id))).scalar() or 0)
    start = time.perf_counter()
    for done in range(0, count, 20_000):
        n = min(20_000, count - done)
        bases = rng.integers(0, len(sentences), n)
        noise = rng.standard_normal((n, dimension), dtype=np.float32)
        vectors = pool_vectors[bases] + noise * np.float32(NOISE_SIGMA / math.sqrt(dimension))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        agents, tiers, metadata = rng.random(n), rng.random(n), rng.random(n) < 0.5
        importance = np.round(rng.uniform(0.1, 0.9, n), 2)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for k in range(n):
            row = first_row + done + k
            memory_id = next_id + done + k + 1
            content = f"{sentences[int(bases[k])]} {detail(row)}"
            created = now - timedelta(days=365) + timedelta(seconds=row % 31_000_000)
            rows["memories"].append(
                {
                    "id": memory_id,
                    "user_id": user,
                    "agent_id": _agent(float(agents[k])),
                    "session_id": f"s{row // SESSION_LENGTH:06d}",
                    "tier": "episodic" if tiers[k] < 0.65 else "semantic",
                    "content": content,
                    "content_hash": content_hash(content),
                    "importance": float(importance[k]),
                    "visibility": "private",
                    "created_at": created,
                    "updated_at": created,
                    "last_accessed_at": None,
                    "access_count": 0,
                    "expires_at": None,
                    "version": 1,
                }
            )
            if metadata[k]:
                project = canonical_json(WORDS["project"][row % 24].lower())
                rows["metadata"].append(
                    {"memory_id": memory_id, "key": "project", "value_json": project}
                )
            rows["terms"].append(terms_row(memory_id, user, content))
            rows["embeddings"].append(
                {
                    "memory_id": memory_id,
                    "model": model,
                    "dimension": dimension,
                    "vector": vectors[k].tobytes(),
                }
            )
            rows["changes"].append({"user_id": user, "memory_id": memory_id})
        with memory.engine.begin() as connection:
            connection.execute(memories_t.insert(), rows["memories"])
            if rows["metadata"]:
                connection.execute(metadata_t.insert(), rows["metadata"])
            connection.execute(terms_t.insert(), rows["terms"])
            connection.execute(embeddings_t.insert(), rows["embeddings"])
            connection.execute(changes_t.insert(), rows["changes"])
        if count >= 200_000 and (done // 20_000) % 10 == 9:
            log(f"  {user}: {done + n:,}/{count:,}")
    return count / (time.perf_counter() - start)


def finish_load(memory: Memory) -> None:
    with memory.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if memory.backend == "postgresql":
            connection.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('memories', 'id'), "
                "(SELECT max(id) FROM memories))"
            )
            connection.exec_driver_sql("VACUUM (ANALYZE)")  # what autovacuum would do
        else:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def setup_context(memory: Memory, corpus: Corpus) -> None:
    """Preferences, code patterns, a checkpoint and 20 working memories, via the public API."""
    live = memory.scope(USER, AGENT, session=LIVE_SESSION)
    for key, value in PREFERENCES.items():
        live.set_preference(key, value)
    for i in range(12):
        language, task = WORDS["language"][i % 10], WORDS["task"][i % 18]
        name = task.replace(" ", "_")
        live.record_pattern(
            language,
            f"{name}_helper",
            f"def {name}(client, payload):\n    return client.send(payload)",
            description=f"How we do {task} in {language} with retries and structured logging",
            tags=[task.split()[0], language.lower()],
        )
    live.save_state({"task": "prepare the Atlas design review", "step": 3})
    live.add_many(corpus.distinct(20, corpus.sentence))


# -- the measurements ---------------------------------------------------------------------------


def measure_ingest(
    memory: Memory, embedder: MiniLMEmbedder, corpus: Corpus, total: int, batch: int
) -> dict[str, float]:
    """``add_many`` through the real embedder, and the model alone on the same batches."""
    texts = [
        f"{s} {detail(10_000_000 + i)}"
        for i, s in enumerate(corpus.distinct(total, corpus.sentence))
    ]
    scope = memory.scope(INGEST_USER, AGENT, session="ingest")
    scope.add_many(["a first write opens the connections"])
    model_ms = add_ms = 0.0
    for start in range(0, total, batch):
        chunk = texts[start : start + batch]
        model_ms += timed(embedder.embed, chunk)[1].wall
        stored, add = timed(scope.add_many, chunk)
        assert len(stored) == len(chunk)
        add_ms += add.wall
    return {
        "memories": total,
        "add_many_per_s": round(total / add_ms * 1000, 1),
        "model_alone_per_s": round(total / model_ms * 1000, 1),
    }


def cold_load(url: str, embedder: MiniLMEmbedder, question: str) -> tuple[Memory, dict[str, Any]]:
    """Open the store afresh; time the first search (it loads the vector index) and weigh
    the index."""
    gc.collect()
    memory = Memory.open(url, embedder=embedder)
    scope = memory.scope(USER, AGENT)
    scope.list(limit=1)  # the pool's first connection, outside the timing
    first_ms = timed(lambda: scope.search(question, limit=SEARCH_LIMIT))[1].wall
    index = memory._retriever._users[USER]
    size = int(index.size)
    deep = deep_size(index) + deep_size(memory._retriever._terms[USER])
    return memory, {
        "first_search_ms": round(first_ms, 1),
        "indexed_vectors": size,
        "index_bytes_per_memory": round(memory._retriever.index_bytes() / size, 1),
        "deep_bytes_per_memory": round(deep / size, 1),
    }


def measure_latency(
    memory: Memory,
    embedder: MiniLMEmbedder,
    questions: Iterator[str],
    rounds: int,
    budget: int,
    seed: int,
) -> dict[str, Any]:
    search_scope = memory.scope(USER, AGENT)
    inject_scope = memory.scope(USER, AGENT, session=LIVE_SESSION)
    index = memory._retriever._users[USER]
    postings = memory._retriever._terms[USER]
    vectors: list[np.ndarray] = [embedder.embed(["warm up"])[0]]
    k1, b = memory._retriever.weights.bm25_k1, memory._retriever.weights.bm25_b

    # The reader the searches use sees its own agent's memories (no grants in this data).
    reader: Any = SimpleNamespace(
        owner=SimpleNamespace(agent=AGENT),
        held=SimpleNamespace(tiers=(), memory_ids=(), owners=()),
        tagged=frozenset(),
    )
    source = ProcessVectors(index, embedder.model_name)

    def vector_step() -> None:
        with memory.engine.connect() as connection:
            source.top(connection, reader, vectors[-1], VECTOR_CANDIDATES)

    def keyword_step() -> None:
        wanted = list(dict.fromkeys(terms(next(questions))))
        with index.lock:
            postings.scores(wanted, k1, b).best(reader, KEYWORD_KEPT)

    items: list[int] = []

    def inject() -> None:
        items.append(len(inject_scope.inject(next(questions), budget).items))

    ops: dict[str, Callable[[int], object]] = {
        "search": lambda _: search_scope.search(next(questions), limit=SEARCH_LIMIT),
        "inject": lambda _: inject(),
        "query_embedding": lambda _: vectors.append(embedder.embed([next(questions)])[0]),
        "vector_step": lambda _: vector_step(),
        "keyword_step": lambda _: keyword_step(),
    }
    rng = random.Random(seed)
    interleaved(ops, WARMUP, rng)  # also absorbs the first compaction of the live session
    before = memory.injection_stats.overflows
    samples = interleaved(ops, rounds, rng)
    result: dict[str, Any] = {name: summary(samples[name], ("n", "p50", "p95")) for name in ops}
    result["overflows"] = memory.injection_stats.overflows - before
    result["mean_inject_items"] = round(float(np.mean(items[-rounds:])), 1)
    return result


def run_case(
    backend: str,
    size: int,
    args: argparse.Namespace,
    embedder: MiniLMEmbedder,
    pool: tuple[list[str], np.ndarray],
) -> dict[str, Any]:
    label = f"{backend} {size:,}"
    seed = args.seed + size + (1 if backend == "postgresql" else 0)
    rng = np.random.default_rng(seed)
    corpus = Corpus(seed)
    result: dict[str, Any] = {"backend": backend, "size": size, "load_avg": load_average()}
    with scratch_database(backend, args.postgres_url, "membench") as url:
        memory = Memory.open(url, embedder=embedder)
        try:
            log(f"{label}: bulk loading ...")
            result["bulk_rows_per_s"] = round(bulk_load(memory, pool, USER, size, 0, rng))
            others = max(int(size * OTHER_USER_SHARE), 50)
            for u in range(OTHER_USERS):
                bulk_load(memory, pool, f"other-{u}", others, size + u * others, rng)
            finish_load(memory)
            setup_context(memory, corpus)
            log(f"{label}: ingestion of {args.ingest} memories through the embedder ...")
            result["ingest"] = measure_ingest(
                memory, embedder, corpus, args.ingest, args.ingest_batch
            )
        finally:
            memory.close()
        questions = iter(corpus.distinct(args.queries * 4 + WARMUP * 4 + 1, corpus.question))
        log(f"{label}: cold open and first search ...")
        memory, result["index"] = cold_load(url, embedder, next(questions))
        try:
            log(f"{label}: {args.queries} rounds of search, inject and the baselines ...")
            result["latency"] = measure_latency(
                memory, embedder, questions, args.queries, args.budget, seed
            )
        finally:
            memory.close()
    result["load_avg_end"] = load_average()
    result["targets"] = evaluate_targets(result)
    return result


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    backend, size, latency = result["backend"], result["size"], result["latency"]
    checks = []

    def check(name: str, value: float, limit: float, at_least: bool = False) -> None:
        ok = value >= limit if at_least else value <= limit
        checks.append({"target": name, "value": value, "limit": limit, "ok": ok})

    if backend == "sqlite" and size == 100_000:
        check("inject p95 <= 15 ms at 100k", latency["inject"]["p95_ms"], TARGET_INJECT_P95_MS)
    if backend == "sqlite" and size == 1_000_000:
        check("search p95 <= 50 ms at 1M", latency["search"]["p95_ms"], TARGET_SEARCH_P95_MS)
    check("ingestion >= 500/s", result["ingest"]["add_many_per_s"], TARGET_INGEST_PER_S, True)
    check("index <= 1,600 B/memory", result["index"]["deep_bytes_per_memory"], TARGET_INDEX_BYTES)
    return checks


# -- reporting ----------------------------------------------------------------------------------


def print_case(result: dict[str, Any], budget: int) -> None:
    latency, index, ingest = result["latency"], result["index"], result["ingest"]
    print(f"\n=== {result['backend']}, {result['size']:,} memories for one user ===")
    print(f"load average {result['load_avg']} at start, {result['load_avg_end']} at end")
    titles = {
        "search": "search (hybrid, limit 10, new query)",
        "inject": f"inject (budget {budget}, new query)",
        "query_embedding": "baseline: query embedding alone",
        "vector_step": f"baseline: vector step alone (best {VECTOR_CANDIDATES})",
        "keyword_step": f"baseline: keyword step alone (best {KEYWORD_KEPT})",
    }
    rows = [
        [title, latency[key]["p50_ms"], latency[key]["p95_ms"]] for key, title in titles.items()
    ]
    print(table(["operation (ms)", "p50", "p95"], rows))
    print(
        f"inject: {latency['mean_inject_items']} items per context, "
        f"{latency['overflows']} overflows in {latency['inject']['n']} calls"
    )
    print(
        f"first search after open (loads {index['indexed_vectors']:,} vectors and their terms): "
        f"{index['first_search_ms']:,.0f} ms; index {index['index_bytes_per_memory']:,} B/memory "
        f"in arrays, {index['deep_bytes_per_memory']:,} B/memory in all"
    )
    print(
        f"ingestion: add_many {ingest['add_many_per_s']:,}/s; the model alone on the same "
        f"batches {ingest['model_alone_per_s']:,}/s; bulk load {result['bulk_rows_per_s']:,} rows/s"
    )
    for check in result["targets"]:
        print(f"target {check['target']}: {check['value']} -> {'PASS' if check['ok'] else 'FAIL'}")


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\n=== summary (ms) ===")
    rows = []
    for r in results:
        lat, index = r["latency"], r["index"]
        rows.append([
            f"{r['backend']} {r['size']:,}", lat["search"]["p50_ms"], lat["search"]["p95_ms"],
            lat["inject"]["p50_ms"], lat["inject"]["p95_ms"], lat["query_embedding"]["p50_ms"],
            lat["vector_step"]["p50_ms"], lat["keyword_step"]["p50_ms"],
            round(index["first_search_ms"]), round(r["ingest"]["add_many_per_s"]),
            round(index["deep_bytes_per_memory"]),
        ])  # fmt: skip
    header = ["case", "search p50", "p95", "inject p50", "p95", "embed p50", "vector p50",
              "keyword p50", "cold ms", "ingest/s", "B/memory"]  # fmt: skip
    print(table(header, rows, digits=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="memories per user (1M: SQLite only)"
    )
    parser.add_argument("--queries", type=int, default=200, help="measured rounds")
    parser.add_argument("--budget", type=int, default=512, help="inject token budget")
    parser.add_argument("--ingest", type=int, default=2000, help="memories ingested per case")
    parser.add_argument("--ingest-batch", type=int, default=500)
    parser.add_argument("--pool", type=int, default=10000, help="distinct embedded sentences")
    parser.add_argument(
        "--embedder-threads", type=int, default=None, help="MiniLMEmbedder(threads=N)"
    )
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--cache-dir", default=os.path.join(tempfile.gettempdir(), "membench-cache")
    )
    parser.add_argument("--json", default=None, help="also append the JSON lines here")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for backend in args.backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"--backends: unknown backend {backend!r} (sqlite, postgresql)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: databases dropped

    signal.signal(signal.SIGTERM, terminate)
    # Search and inject as they are behind the rollout flags (off by default): switched on
    # through the environment layer, as on an operator's host that has the feature.
    for name in BUILTIN_FLAGS:
        os.environ.setdefault(name, "on")
    # The first search measures the load from the database, as it always did (and writes no
    # snapshot meanwhile); benchmarks/cold_start.py measures a restart from snapshots.
    os.environ[CACHE_DIR_ENV] = "off"
    embedder = MiniLMEmbedder(threads=args.embedder_threads)
    embedder.embed(["load the model"])
    pool = build_pool(embedder, args.pool, args.seed, args.cache_dir)
    results = []
    for backend in args.backends:
        for size in args.sizes:
            if backend == "postgresql" and size >= 1_000_000:
                log("postgresql 1M: skipped (the issue asks for 10k and 100k on PostgreSQL)")
                continue
            result = run_case(backend, size, args, embedder, pool)
            print_case(result, args.budget)
            line = emit(result)
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(line + "\n")
            results.append(result)
    print_summary(results)
    return 1 if any(not check["ok"] for r in results for check in r["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
