"""Store throughput and latency benchmark for the Phase 2 memory store.

Measures, on SQLite (a file in a temporary directory) and PostgreSQL (a throwaway database),
at 10,000 and 100,000 memories:

- inserts per second: single ``Scope.add`` (one transaction each) and batched
  ``Scope.add_many`` (batches of 500 and 1,000), plus the rate of the bulk load itself;
- latency (p50 / p95 / p99) of every store query: ``Scope.get`` (a read plus an
  ``UPDATE ... RETURNING``, because a get records an access), ``Scope.list`` with a tier, a
  metadata and a session filter (limit 20), ``get_preference``, ``load_state`` and
  ``find_patterns``;
- database size per 10,000 memories, embeddings excluded (by default the store is opened
  without an embedder, so none are computed or stored).

Every latency is reported next to a floor measured in the same run through the same engine:
a ``SELECT 1`` inside a transaction opened exactly the way the store opens its own
(pool checkout, BEGIN, SELECT 1, COMMIT), and the bare wire round trip of ``SELECT 1`` on a
connection already held. The difference is what the store itself costs.

The data are synthetic but shaped like real use: 50 users x 4 agents, sessions of a few dozen
memories per agent, all three tiers (working memories with a 24 h TTL), 1-3 metadata keys on
most memories, sentence-like contents of 60-200 characters built from word lists with a
seeded RNG, plus preferences, code patterns and session checkpoints. Queries target one
realistic user (the user with the median number of memories, ~2,000 at 100k) and rotate over
that user's agents, sessions, tiers and metadata values. Operations are interleaved
round-robin (in a shuffled order per round) so that machine noise hits all of them alike.

Run (from the repository root)::

    .venv/bin/python benchmarks/store_throughput.py
    .venv/bin/python benchmarks/store_throughput.py --backends sqlite --sizes 10000 --samples 300

Output: a table per backend and size, then one JSON line per (backend, size) with every
figure (``grep '^{'``); ``--json PATH`` also writes the JSON lines to PATH. Targets checked:
p95 of every store query < 5 ms at 100k memories on SQLite; < 50 MB per 10,000 memories.
The exit status is 1 when a target fails.

On a shared machine, other processes inflate the tails: an operation whose process is
preempted waits a scheduler slice of several milliseconds. So every sample also records the
run-queue wait (``/proc/<pid>/schedstat``) of this process and of the PostgreSQL backends
serving it, and the report gives each latency both as measured and without that wait
(columns marked ``*``); the latency targets are judged on the latter, and the report says so
when the two verdicts differ. Each phase also reports the CPU used by other processes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import inspect
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import (
    RunQueueWait,
    emit,
    load_average,
    machine_cpu_seconds,
    percentile,
    run_facts,
    run_queue_wait,
    shuffled_rounds,
    summary,
    table,
    timed,
)
from sqlalchemy.engine import make_url

from memory import Memory, Scope
from memory.store.engine import write_options

LATENCY_TARGET_MS = 5.0
LATENCY_TARGET_SIZE = 100_000
SIZE_TARGET_MB_PER_10K = 50.0
LIST_LIMIT = 20
# Run-queue wait (share of wall time) above which a phase's tails are suspect ...
NOISY_WAIT_SHARE = 0.01
NOISY_OTHER_CORES = 0.2  # ... while other processes used at least this much CPU
WORKING_TTL = timedelta(hours=24)
STATE_TTL = timedelta(hours=24)

USERS = 50
AGENTS = ("planner", "coder", "reviewer", "researcher")
AGENT_WEIGHTS = (0.35, 0.30, 0.20, 0.15)
SESSION_MEAN_MEMORIES = 100  # per user-session, spread over the agents that took part
SESSIONLESS_SHARE = 0.15  # long-lived facts stored without a session

# -- word lists ---------------------------------------------------------------------------------

PERSONS = (
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Priya",
    "Tomás",
    "Chen",
    "Fatima",
    "Kwame",
    "Ingrid",
    "Diego",
    "Yuki",
    "Olu",
    "Sofia",
    "Rahul",
    "Hannah",
    "Mateo",
    "Aiko",
)
ROLES = (
    "the user",
    "the team lead",
    "the on-call engineer",
    "the product owner",
    "the security reviewer",
    "the data analyst",
    "the release manager",
)
THINGS = (
    "billing export",
    "invoice PDF renderer",
    "OAuth token refresh",
    "nightly ETL job",
    "search index",
    "rate limiter",
    "onboarding email flow",
    "CSV importer",
    "feature flag rollout",
    "latency dashboard",
    "payment webhook handler",
    "user settings page",
    "audit log table",
    "Kafka consumer",
    "retry policy",
    "session cache",
    "GraphQL schema",
    "Terraform module",
    "CI pipeline",
    "release notes",
    "database migration",
    "error budget report",
    "mobile push service",
    "pricing calculator",
    "SSO login page",
    "S3 lifecycle rules",
    "dependency lockfile",
    "health check endpoint",
)
VERBS = (
    ("refactor", "refactored", "refactoring"),
    ("migrate", "migrated", "migrating"),
    ("fix", "fixed", "fixing"),
    ("review", "reviewed", "reviewing"),
    ("document", "documented", "documenting"),
    ("benchmark", "benchmarked", "benchmarking"),
    ("split", "split", "splitting"),
    ("deploy", "deployed", "deploying"),
    ("rewrite", "rewrote", "rewriting"),
    ("test", "tested", "testing"),
    ("profile", "profiled", "profiling"),
    ("simplify", "simplified", "simplifying"),
    ("harden", "hardened", "hardening"),
    ("roll back", "rolled back", "rolling back"),
    ("instrument", "instrumented", "instrumenting"),
    ("cache", "cached", "caching"),
)
DEADLINES = (
    "Friday",
    "the end of the sprint",
    "the 3pm standup",
    "tomorrow morning",
    "next Tuesday",
    "the quarterly review",
    "the customer demo",
    "Monday's planning meeting",
    "the code freeze",
    "the {release} release",
)
PATHS = (
    "src/billing/export.py",
    "services/auth/refresh.ts",
    "etl/nightly/jobs.sql",
    "api/handlers/webhooks.go",
    "web/src/settings/Page.tsx",
    "infra/modules/vpc/main.tf",
    "scripts/release.sh",
    "lib/ratelimit/bucket.py",
    "search/indexer/worker.py",
    "migrations/0042_audit_log.sql",
    "mobile/push/Sender.kt",
    "pricing/calculator.rs",
)
REACTIONS = (
    "approved the plan",
    "asked for smaller pull requests",
    "was unhappy with the p95 latency",
    "wanted more test coverage first",
    "agreed to postpone the cleanup",
    "asked to keep the old endpoint for a month",
    "signed off on the schema change",
    "flagged a GDPR concern",
    "requested a rollback plan",
    "liked the shorter summary format",
    "asked for a follow-up ticket",
    "wants a demo before merging",
)
EVENTS = (
    "last deploy",
    "dependency upgrade",
    "schema migration",
    "config change",
    "traffic spike on Monday",
    "certificate rotation",
    "switch to the new queue",
    "region failover drill",
)
STYLES = (
    "short answers with code first",
    "type hints on every public function",
    "tabs over spaces",
    "British spelling in documentation",
    "pytest over unittest",
    "small focused commits",
    "explanations before code",
    "upper-case SQL keywords",
    "metric units",
    "ISO 8601 dates",
    "no emojis in commit messages",
    "bullet-point summaries",
    "links to the relevant runbook",
)
CONTEXTS = (
    "reviewing pull requests",
    "debugging production incidents",
    "writing design documents",
    "pairing on refactors",
    "answering support tickets",
    "planning the sprint",
    "reading long logs",
    "estimating new work",
)
FACTS = (
    "runs on PostgreSQL 15 behind PgBouncer",
    "is deployed to eu-west-1 every Tuesday",
    "keeps 30 days of audit logs",
    "uses feature flags for every risky change",
    "has a p95 latency budget of 200 ms",
    "stores invoices as PDF in object storage",
    "still depends on the legacy SOAP gateway",
    "is owned by the payments team",
    "pages the on-call engineer after 5 failed health checks",
    "shares its Redis cluster with the session service",
)
PIPELINES = (
    "GitHub Actions and Argo CD",
    "the blue-green pipeline",
    "a canary stage at 5 percent",
    "the weekly release train",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Africa/Lagos", "Asia/Kolkata")
PROJECTS = (
    ("billing", "BILL"),
    ("checkout", "CHK"),
    ("search", "SRCH"),
    ("identity", "IDN"),
    ("analytics", "ANL"),
    ("mobile", "MOB"),
    ("notifications", "NTF"),
    ("reporting", "REP"),
    ("onboarding", "ONB"),
    ("pricing", "PRC"),
    ("infra", "INF"),
    ("support-portal", "SUP"),
)
TOPICS = (
    "performance",
    "security",
    "testing",
    "deployment",
    "refactoring",
    "documentation",
    "observability",
    "data-quality",
    "accessibility",
    "cost",
    "incident",
    "api-design",
    "onboarding",
    "compliance",
    "caching",
    "migrations",
    "ux",
    "reliability",
    "planning",
    "dependencies",
)
SOURCES = ("chat", "tool", "import", "summary", "code-review")
PRIORITIES = (("low", 0.25), ("normal", 0.55), ("high", 0.20))

WORKING_TEMPLATES = (
    "{Role} asked the {agent} to {verb} the {thing} before {deadline}",
    "Currently {verbing} the {thing} in {path}; {n} tests still failing on {branch}",
    "Next step: {verb} the {thing}, then {verb2} the {thing2} for {project}",
    "Waiting on {person} to review {ticket} before we {verb} the {thing}",
    "{Person} wants the {thing} {verbed} by {deadline}; {n} open questions remain",
    "Draft plan for {ticket}: {verb} the {thing}, {verb2} the {thing2}, then ask {person}",
)
EPISODIC_TEMPLATES = (
    "On {weekday} the {agent} {verbed} the {thing} for {project} and {person} {reaction}",
    "{Person} reported that the {thing} broke after the {event}; the fix landed in {ticket}",
    "The {agent} summarised {n} messages about the {thing}: {person} {reaction}",
    "Session recap: we {verbed} the {thing} in {path} and left {ticket} open for {person}",
    "After {n} failed attempts the {agent} {verbed} the {thing}; {role} {reaction}",
)
SEMANTIC_TEMPLATES = (
    "{Person} prefers {style} when {context}",
    "The {project} service {fact}",
    "{Person} owns the {thing} for {project} and usually reviews changes on {weekday}s",
    "Deploys of {project} go through {pipeline}; changes to the {thing} need sign-off "
    "from {person}",
    "{Person} works in the {tz} time zone and prefers meetings before {hour}",
    "For {project}, never {verb} the {thing} without a ticket such as {ticket}",
)
TEMPLATES = {
    "working": WORKING_TEMPLATES,
    "episodic": EPISODIC_TEMPLATES,
    "semantic": SEMANTIC_TEMPLATES,
}

PREFERENCE_KEYS: tuple[tuple[str, Callable[[random.Random], Any]], ...] = (
    ("response.style", lambda r: r.choice(["concise", "detailed", "bullet points"])),
    ("response.language", lambda r: r.choice(["en", "de", "fr", "ja", "pt-BR"])),
    ("timezone", lambda r: r.choice(TIMEZONES)),
    ("code.indent", lambda r: r.choice([2, 4, "tab"])),
    ("code.line_length", lambda r: r.choice([79, 88, 100, 120])),
    ("code.test_framework", lambda r: r.choice(["pytest", "unittest", "jest", "go test"])),
    ("code.type_hints", lambda r: r.random() < 0.8),
    ("review.min_approvals", lambda r: r.randint(1, 3)),
    ("notify.channels", lambda r: r.sample(["email", "slack", "pager", "sms"], 2)),
    ("notify.quiet_hours", lambda r: {"from": f"{r.randint(18, 23)}:00", "to": "07:00"}),
    ("summary.max_words", lambda r: r.choice([50, 100, 200])),
    ("editor", lambda r: r.choice(["vim", "vscode", "emacs", "jetbrains"])),
    ("git.commit_style", lambda r: r.choice(["conventional", "free-form", "gitmoji"])),
    ("docs.spelling", lambda r: r.choice(["en-GB", "en-US"])),
    ("units", lambda r: r.choice(["metric", "imperial"])),
    ("date_format", lambda r: r.choice(["ISO 8601", "DD.MM.YYYY", "MM/DD/YYYY"])),
    ("deploy.window", lambda r: {"days": r.sample(list(WEEKDAYS), 2), "hour": r.randint(8, 16)}),
    ("sql.keywords", lambda r: r.choice(["upper", "lower"])),
    ("explain.level", lambda r: r.choice(["beginner", "intermediate", "expert"])),
    ("meeting.max_minutes", lambda r: r.choice([15, 25, 30, 45])),
    ("emoji", lambda r: r.random() < 0.2),
    ("pr.size_limit", lambda r: r.choice([200, 400, 800])),
    ("oncall.escalation", lambda r: {"after_minutes": r.choice([5, 10, 15]), "to": "lead"}),
    ("shell", lambda r: r.choice(["bash", "zsh", "fish"])),
    ("cloud.region", lambda r: r.choice(["eu-west-1", "us-east-1", "ap-northeast-1"])),
)
LANGUAGES = (("python", 0.4), ("typescript", 0.25), ("sql", 0.15), ("go", 0.1), ("bash", 0.1))
PATTERN_NAMES = (
    "retry with exponential backoff",
    "paginate with keyset cursor",
    "context manager for timing",
    "batch insert with returning",
    "idempotent webhook handler",
    "structured logging setup",
    "feature flag guard",
    "typed config loader",
    "graceful shutdown",
    "circuit breaker",
    "upsert on conflict",
    "rate limit token bucket",
    "async worker pool",
    "cache aside read",
    "CSV streaming parser",
    "JWT verification",
    "health check endpoint",
    "test fixture factory",
    "migration with backfill",
    "dead letter queue consumer",
    "window function ranking",
    "deterministic hashing for rollout",
    "property based test",
    "dependency injection root",
)
PATTERN_TAGS = (
    "resilience",
    "database",
    "http",
    "testing",
    "async",
    "logging",
    "security",
    "performance",
    "config",
    "queues",
    "sql",
    "cli",
    "observability",
    "caching",
)
SEARCH_WORDS = ("retry", "cursor", "upsert", "cache", "token", "queue", "hash", "test")


# -- statistics ---------------------------------------------------------------------------------


STATS = ("n", "p50", "p95", "p99", "mean", "min", "max")


def latency_summary(samples: list[float], waits: list[float] | None = None) -> dict[str, Any]:
    """``measure.summary`` of milliseconds under bare names (p50, p95, ...); with ``waits``
    (the run-queue wait inside each sample) also the same figures without that wait, under
    ``without_cpu_wait``."""
    result = summary(samples, STATS, unit="", digits=4)
    if waits is not None:
        adjusted = [max(0.0, value - wait) for value, wait in zip(samples, waits, strict=True)]
        result["without_cpu_wait"] = summary(adjusted, STATS, unit="", digits=4)
        result["cpu_wait_share"] = round(sum(waits) / max(1e-6, sum(samples)), 4)
        result["samples_with_cpu_wait_over_1ms"] = sum(1 for wait in waits if wait > 1)
    return result


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- synthetic data -----------------------------------------------------------------------------


class Slots(dict[str, str]):
    """Template slots filled on demand, so that each sentence draws only what it uses."""

    def __init__(self, rng: random.Random, agent: str, project: tuple[str, str]) -> None:
        super().__init__()
        self.rng = rng
        self.agent = agent
        self.project = project

    def __missing__(self, key: str) -> str:
        r = self.rng
        value: str
        if key == "agent":
            value = self.agent
        elif key == "project":
            value = self.project[0]
        elif key == "ticket":
            value = f"{self.project[1]}-{r.randint(100, 9999)}"
        elif key in ("verb", "verb2"):
            value = r.choice(VERBS)[0]
        elif key == "verbed":
            value = r.choice(VERBS)[1]
        elif key == "verbing":
            value = r.choice(VERBS)[2]
        elif key in ("thing", "thing2"):
            value = r.choice(THINGS)
        elif key == "person":
            value = r.choice(PERSONS)
        elif key == "Person":
            value = r.choice(PERSONS + ("The user", "The team lead"))
        elif key == "role":
            value = r.choice(ROLES)
        elif key == "Role":
            value = r.choice(ROLES).capitalize()
        elif key == "deadline":
            value = r.choice(DEADLINES).format(release=f"v{r.randint(1, 4)}.{r.randint(0, 12)}")
        elif key == "path":
            value = r.choice(PATHS)
        elif key == "branch":
            value = r.choice(
                (
                    "main",
                    f"release/{r.randint(1, 4)}.{r.randint(0, 12)}",
                    f"feature/{self.project[0]}-{r.randint(10, 999)}",
                )
            )
        elif key == "n":
            value = str(r.randint(2, 48))
        elif key == "reaction":
            value = r.choice(REACTIONS)
        elif key == "event":
            value = r.choice(EVENTS)
        elif key == "weekday":
            value = r.choice(WEEKDAYS)
        elif key == "style":
            value = r.choice(STYLES)
        elif key == "context":
            value = r.choice(CONTEXTS)
        elif key == "fact":
            value = r.choice(FACTS)
        elif key == "pipeline":
            value = r.choice(PIPELINES)
        elif key == "tz":
            value = r.choice(TIMEZONES)
        elif key == "hour":
            value = f"{r.randint(9, 15)}:{r.choice(('00', '30'))}"
        else:
            raise KeyError(key)
        self[key] = value
        return value


class ContentFactory:
    """Unique, sentence-like memory contents of 60-200 characters."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def sentence(self, tier: str, agent: str, project: tuple[str, str]) -> str:
        r = self.rng
        for attempt in range(40):
            text = r.choice(TEMPLATES[tier]).format_map(Slots(r, agent, project))
            if attempt >= 20:  # small template spaces saturate: add a concrete detail
                text += f" (see {project[1]}-{r.randint(100, 99999)})"
            if len(text) < 60:
                text += f", noted by the {agent} on {r.choice(WEEKDAYS)}"
            if 60 <= len(text) <= 200 and text not in self.seen:
                self.seen.add(text)
                return text
        raise RuntimeError("could not generate a unique sentence")  # pragma: no cover


@dataclass
class UserProfile:
    user: str
    projects: list[tuple[str, str]]
    sessions: list[str] = field(default_factory=list)


@dataclass
class Dataset:
    size: int
    users: list[UserProfile]
    # (user, agent, session or None, items): one add_many call each, in load order.
    batches: list[tuple[str, str, str | None, list[dict[str, Any]]]]
    preferences: list[tuple[str, str, str, Any, float]]  # user, agent, key, value, confidence
    patterns: list[tuple[str, str, str, str, str, str, list[str]]]
    pattern_uses: list[tuple[str, str, str, str]]  # user, agent, language, name
    checkpoints: list[tuple[str, str, str, dict[str, Any]]]  # user, agent, session, state
    per_user: Counter[str]
    factory: ContentFactory
    rng: random.Random


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.factory = ContentFactory(self.rng)

    def metadata(self, profile: UserProfile, project: tuple[str, str]) -> dict[str, Any]:
        r = self.rng
        if r.random() >= 0.85:  # 15 % carry no metadata
            return {}
        wanted = r.choice((1, 1, 2, 2, 2, 3))
        keys: list[str] = []
        if r.random() < 0.75:
            keys.append("project")
        others = ["topic", "source", "priority", "ticket"]
        r.shuffle(others)
        keys.extend(others[: max(0, wanted - len(keys))])
        result: dict[str, Any] = {}
        for key in keys[:wanted]:
            if key == "project":
                result[key] = project[0]
            elif key == "topic":
                result[key] = r.choice(TOPICS)
            elif key == "source":
                result[key] = r.choice(SOURCES)
            elif key == "priority":
                result[key] = r.choices([p for p, _ in PRIORITIES], [w for _, w in PRIORITIES])[0]
            else:
                result[key] = f"{project[1]}-{r.randint(100, 9999)}"
        return result

    def memory(self, profile: UserProfile, agent: str, tier: str) -> dict[str, Any]:
        r = self.rng
        project = r.choice(profile.projects)
        item: dict[str, Any] = {
            "content": self.factory.sentence(tier, agent, project),
            "tier": tier,
            "importance": round(
                min(1.0, max(0.0, r.betavariate(2, 3) + (tier == "semantic") * 0.3)), 3
            ),
            "visibility": "shared" if r.random() < 0.15 else "private",
            "metadata": self.metadata(profile, project),
        }
        if tier == "working":
            item["ttl"] = WORKING_TTL
        return item

    def session_id(self) -> str:
        return f"sess-{self.rng.getrandbits(48):012x}"

    def build(self, size: int) -> Dataset:
        r = self.rng
        users = [UserProfile(f"user-{index:03d}", r.sample(PROJECTS, 3)) for index in range(USERS)]
        # Mild skew between users; ~2,000 memories for a typical user at 100k.
        weights = [r.lognormvariate(0, 0.25) for _ in users]
        total_weight = sum(weights)
        counts = [int(size * w / total_weight) for w in weights]
        for index in sorted(range(USERS), key=lambda i: -weights[i])[: size - sum(counts)]:
            counts[index] += 1

        batches: list[tuple[str, str, str | None, list[dict[str, Any]]]] = []
        per_user: Counter[str] = Counter()
        for profile, count in zip(users, counts, strict=True):
            per_user[profile.user] = count
            sessionless = round(count * SESSIONLESS_SHARE)
            in_sessions = count - sessionless
            # Session-less long-lived facts, one add_many per agent (chunked at 1,000).
            by_agent: dict[str, list[dict[str, Any]]] = {agent: [] for agent in AGENTS}
            for _ in range(sessionless):
                agent = r.choices(AGENTS, AGENT_WEIGHTS)[0]
                tier = "semantic" if r.random() < 0.85 else "episodic"
                by_agent[agent].append(self.memory(profile, agent, tier))
            for agent, items in by_agent.items():
                for start in range(0, len(items), 1000):
                    batches.append((profile.user, agent, None, items[start : start + 1000]))
            # Sessions of a few dozen to a few hundred memories, spread over the agents.
            remaining = in_sessions
            while remaining > 0:
                take = min(
                    remaining, max(5, round(r.lognormvariate(0, 0.6) * SESSION_MEAN_MEMORIES / 1.2))
                )
                remaining -= take
                session = self.session_id()
                profile.sessions.append(session)
                session_items: dict[str, list[dict[str, Any]]] = {}
                for _ in range(take):
                    agent = r.choices(AGENTS, AGENT_WEIGHTS)[0]
                    roll = r.random()
                    tier = "working" if roll < 0.55 else "episodic" if roll < 0.95 else "semantic"
                    session_items.setdefault(agent, []).append(self.memory(profile, agent, tier))
                for agent, items in session_items.items():
                    for start in range(0, len(items), 1000):
                        batches.append((profile.user, agent, session, items[start : start + 1000]))
        # Interleave users and sessions in id order, as a shared store sees them.
        r.shuffle(batches)

        preferences = []
        for profile in users:
            for key, make in r.sample(PREFERENCE_KEYS, r.randint(8, 20)):
                agent = r.choices(AGENTS, AGENT_WEIGHTS)[0]
                preferences.append(
                    (profile.user, agent, key, make(r), round(r.uniform(0.5, 1.0), 2))
                )

        patterns = []
        pattern_uses = []
        for profile in users:
            names: set[tuple[str, str]] = set()
            for _ in range(r.randint(10, 40)):
                language = r.choices([lang for lang, _ in LANGUAGES], [w for _, w in LANGUAGES])[0]
                name = f"{r.choice(PATTERN_NAMES)} ({profile.projects[0][0]} v{r.randint(1, 9)})"
                if (language, name) in names:
                    continue
                names.add((language, name))
                agent = r.choices(AGENTS, AGENT_WEIGHTS)[0]
                snippet = self.snippet(language, name)
                description = self.factory.sentence("semantic", agent, r.choice(profile.projects))
                tags = r.sample(PATTERN_TAGS, r.randint(1, 4))
                patterns.append((profile.user, agent, language, name, snippet, description, tags))
                for _ in range(min(6, int(r.expovariate(0.6)))):
                    pattern_uses.append((profile.user, agent, language, name))

        checkpoints = []
        for profile in users:
            for session in profile.sessions:
                agent = r.choices(AGENTS, AGENT_WEIGHTS)[0]
                for step in range(1, r.randint(1, 4) + 1):
                    checkpoints.append((profile.user, agent, session, self.state(profile, step)))

        return Dataset(
            size,
            users,
            batches,
            preferences,
            patterns,
            pattern_uses,
            checkpoints,
            per_user,
            self.factory,
            r,
        )

    def snippet(self, language: str, name: str) -> str:
        r = self.rng
        ident = "_".join(name.split(" (")[0].split()[:3]).replace("-", "_")
        body_lines = [
            f"    step_{i} = call_{r.choice(THINGS).split()[0].lower()}(attempt={i}, "
            f"timeout={r.randint(1, 30)})"
            for i in range(r.randint(3, 12))
        ]
        header = {
            "python": f"def {ident}(client, payload):",
            "typescript": f"export async function {ident}(client: Client, payload: Payload) {{",
            "sql": f"-- {name}\nWITH {ident} AS (",
            "go": f"func {ident}(ctx context.Context, c *Client) error {{",
            "bash": f"{ident}() {{",
        }[language]
        return header + "\n" + "\n".join(body_lines) + "\n"

    def state(self, profile: UserProfile, step: int) -> dict[str, Any]:
        r = self.rng
        project = r.choice(profile.projects)
        return {
            "step": step,
            "goal": self.factory.sentence("working", "planner", project),
            "open_files": r.sample(PATHS, r.randint(1, 4)),
            "todo": [f"{v[0]} the {r.choice(THINGS)}" for v in r.sample(VERBS, r.randint(1, 5))],
            "cursor": {"file": r.choice(PATHS), "line": r.randint(1, 900)},
            "tokens_used": r.randint(500, 90_000),
        }


# -- backends -----------------------------------------------------------------------------------


def open_memory(url: str, embedder: str) -> Memory:
    """``Memory.open``, without an embedder unless asked for: this benchmark measures the
    store, and vectors would make every write wait for the model."""
    if "embedder" in inspect.signature(Memory.open).parameters:
        return Memory.open(url, embedder=None if embedder == "none" else "default")
    if embedder != "none":
        raise SystemExit("--embedder: this version of the library has no embedder")
    return Memory.open(url)


def server_info(memory: Memory) -> dict[str, Any]:
    with memory.engine.connect() as connection:
        if memory.backend == "sqlite":
            return {
                "sqlite_version": sqlite3.sqlite_version,
                "journal_mode": connection.exec_driver_sql("PRAGMA journal_mode").scalar(),
                "synchronous": connection.exec_driver_sql("PRAGMA synchronous").scalar(),
                "page_size": connection.exec_driver_sql("PRAGMA page_size").scalar(),
                "cache_size": connection.exec_driver_sql("PRAGMA cache_size").scalar(),
            }
        info: dict[str, Any] = {
            "server_version": connection.exec_driver_sql("SHOW server_version").scalar()
        }
        for setting in (
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "autovacuum",
            "random_page_cost",
            "jit",
        ):
            info[setting] = connection.exec_driver_sql(f"SHOW {setting}").scalar()
        return info


def vacuum_analyze(memory: Memory) -> None:
    """PostgreSQL: what autovacuum would have done after a bulk load (it may be off)."""
    if memory.backend != "postgresql":
        return
    with memory.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE)")


def database_size(memory: Memory, url: str, baseline: int, memories: int) -> dict[str, Any]:
    engine = memory.engine
    if memory.backend == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
            page_count = cursor.execute("PRAGMA page_count").fetchone()[0]
            freelist = cursor.execute("PRAGMA freelist_count").fetchone()[0]
            tables: dict[str, int] = {}
            with contextlib.suppress(sqlite3.Error):  # dbstat is optional in SQLite builds
                for name, size in cursor.execute(
                    "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
                ):
                    tables[name] = size
            cursor.close()
        finally:
            raw.close()
        path = make_url(url).database
        files = {
            suffix or "db": (
                Path(f"{path}{suffix}").stat().st_size if Path(f"{path}{suffix}").exists() else 0
            )
            for suffix in ("", "-wal", "-shm")
        }
        total = sum(files.values())
        return {
            "method": "file size of db + -wal + -shm after PRAGMA wal_checkpoint(TRUNCATE)",
            "checkpoint_busy": busy,
            "files_bytes": files,
            "page_size": page_size,
            "page_count": page_count,
            "freelist_pages": freelist,
            "objects_bytes": tables,
            "total_bytes": total,
            "mb_per_10k": round(total / memories * 10_000 / 1e6, 3),
        }
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), "
            "pg_indexes_size(c.oid), COALESCE(pg_total_relation_size(c.reltoastrelid), 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC"
        ).all()
        database = connection.exec_driver_sql(
            "SELECT pg_database_size(current_database())"
        ).scalar_one()
    relations = {row[0]: row[1] for row in rows}
    detail = {row[0]: {"heap": row[2], "indexes": row[3], "toast": row[4]} for row in rows}
    # The memories and every per-memory table (metadata, and whatever later revisions add
    # beside it), without embeddings: the size target excludes them.
    counted = [
        name
        for name in relations
        if name == "memories" or (name.startswith("memory_") and name != "memory_embeddings")
    ]
    memory_bytes = sum(relations[name] for name in counted)
    return {
        "method": "pg_total_relation_size of " + " + ".join(counted) + " after VACUUM (ANALYZE)",
        "counted_tables": counted,
        "relations_bytes": relations,
        "relation_detail_bytes": detail,
        "database_delta_bytes": database - baseline,
        "total_bytes": memory_bytes,
        "mb_per_10k": round(memory_bytes / memories * 10_000 / 1e6, 3),
        "database_delta_mb_per_10k": round((database - baseline) / memories * 10_000 / 1e6, 3),
    }


# -- measurement --------------------------------------------------------------------------------


@dataclass
class Op:
    name: str
    floor: str | None  # the floor it is compared with
    run: Callable[[int], tuple[int, str | None]]  # iteration -> (rows, variant)
    samples: list[float] = field(default_factory=list)  # ms
    waits: list[float] = field(default_factory=list)  # run-queue wait inside each sample, ms
    rows: int = 0
    variants: dict[str, list[float]] = field(default_factory=dict)
    variant_waits: dict[str, list[float]] = field(default_factory=dict)


def cycle(rng: random.Random, items: list[Any], count: int) -> list[Any]:
    """``count`` items drawn from ``items`` in shuffled rounds (every item used evenly)."""
    result: list[Any] = []
    while len(result) < count:
        round_ = list(items)
        rng.shuffle(round_)
        result.extend(round_)
    return result[:count]


def pick_target_user(dataset: Dataset) -> str:
    ranked = sorted(dataset.per_user.items(), key=lambda item: (item[1], item[0]))
    return ranked[len(ranked) // 2][0]


def build_ops(
    memory: Memory, dataset: Dataset, user: str, iterations: int, rng: random.Random
) -> tuple[list[Op], dict[str, Any]]:
    engine = memory.engine
    scopes: dict[tuple[str, str | None], Scope] = {}

    def scope(agent: str, session: str | None = None) -> Scope:
        key = (agent, session)
        if key not in scopes:
            scopes[key] = memory.scope(user=user, agent=agent, session=session)
        return scopes[key]

    with engine.connect() as connection:
        id_rows = connection.execute(
            sa.text("SELECT id, agent_id FROM memories WHERE user_id = :u"), {"u": user}
        ).all()
        session_rows = connection.execute(
            sa.text(
                "SELECT agent_id, session_id, COUNT(*) FROM memories "
                "WHERE user_id = :u AND session_id <> '' GROUP BY agent_id, session_id"
            ),
            {"u": user},
        ).all()
        metadata_rows = connection.execute(
            sa.text(
                "SELECT m.agent_id, md.key, md.value_json, COUNT(*) FROM memories m "
                "JOIN memory_metadata md ON md.memory_id = m.id "
                "WHERE m.user_id = :u AND md.key IN ('project', 'topic', 'priority') "
                "GROUP BY m.agent_id, md.key, md.value_json HAVING COUNT(*) >= 3"
            ),
            {"u": user},
        ).all()
        tier_rows = connection.execute(
            sa.text(
                "SELECT agent_id, tier, COUNT(*) FROM memories WHERE user_id = :u "
                "GROUP BY agent_id, tier"
            ),
            {"u": user},
        ).all()
        global_metadata = connection.execute(
            sa.text(
                "SELECT key, value_json, COUNT(*) FROM memory_metadata "
                "WHERE key IN ('project', 'topic', 'priority') GROUP BY key, value_json"
            )
        ).all()

    gets = cycle(rng, [(row.agent_id, row.id) for row in id_rows], iterations)
    tiers = cycle(rng, [(row[0], row[1]) for row in tier_rows], iterations)
    metadata_filters = cycle(
        rng, [(row[0], row[1], json.loads(row[2])) for row in metadata_rows], iterations
    )
    sessions = cycle(rng, [(row[0], row[1]) for row in session_rows], iterations)
    state_sessions = cycle(
        rng, sorted({(c[1], c[2]) for c in dataset.checkpoints if c[0] == user}), iterations
    )
    pref_keys = cycle(rng, sorted(p[2] for p in dataset.preferences if p[0] == user), iterations)
    languages = cycle(rng, sorted({p[2] for p in dataset.patterns if p[0] == user}), iterations)
    words = cycle(rng, list(SEARCH_WORDS), iterations)
    agents = cycle(rng, list(AGENTS), iterations)

    def floor_read(_: int) -> tuple[int, None]:
        with engine.connect() as connection, connection.begin():
            connection.execute(sa.text("SELECT 1")).scalar_one()
        return 1, None

    def floor_write(_: int) -> tuple[int, None]:
        with engine.connect() as connection:
            connection.execution_options(**write_options())
            with connection.begin():
                connection.execute(sa.text("SELECT 1")).scalar_one()
        return 1, None

    wire = engine.raw_connection()
    if memory.backend == "postgresql":
        wire.driver_connection.autocommit = True  # type: ignore[union-attr]
    wire_cursor = wire.cursor()

    def floor_wire(_: int) -> tuple[int, None]:
        wire_cursor.execute("SELECT 1")
        wire_cursor.fetchone()
        return 1, None

    def get(i: int) -> tuple[int, None]:
        agent, memory_id = gets[i]
        scope(agent).get(memory_id)
        return 1, None

    def list_recent(i: int) -> tuple[int, None]:
        return len(scope(agents[i]).list(limit=LIST_LIMIT)), None

    def list_tier(i: int) -> tuple[int, str]:
        agent, tier = tiers[i]
        return len(scope(agent).list(tier=tier, limit=LIST_LIMIT)), f"tier={tier}"

    def list_metadata(i: int) -> tuple[int, str]:
        agent, key, value = metadata_filters[i]
        found = scope(agent).list(metadata={key: value}, limit=LIST_LIMIT)
        return len(found), f"key={key}"

    def list_session(i: int) -> tuple[int, None]:
        agent, session = sessions[i]
        return len(scope(agent).list(session=session, limit=LIST_LIMIT)), None

    def get_preference(i: int) -> tuple[int, None]:
        return int(scope(agents[i]).get_preference(pref_keys[i]) is not None), None

    def load_state(i: int) -> tuple[int, None]:
        agent, session = state_sessions[i]
        return int(scope(agent, session).load_state() is not None), None

    def find_patterns_language(i: int) -> tuple[int, None]:
        return len(scope(agents[i]).find_patterns(language=languages[i], limit=20)), None

    def find_patterns_text(i: int) -> tuple[int, None]:
        return len(scope(agents[i]).find_patterns(text=words[i], limit=20)), None

    ops = [
        Op("floor.read", None, floor_read),
        Op("floor.write", None, floor_write),
        Op("floor.wire", None, floor_wire),
        Op("get", "floor.write", get),
        Op("list.recent", "floor.read", list_recent),
        Op("list.tier", "floor.read", list_tier),
        Op("list.metadata", "floor.read", list_metadata),
        Op("list.session", "floor.read", list_session),
        Op("get_preference", "floor.read", get_preference),
        Op("load_state", "floor.read", load_state),
        Op("find_patterns.language", "floor.read", find_patterns_language),
        Op("find_patterns.text", "floor.read", find_patterns_text),
    ]
    user_metadata_values = {(row[1], row[2]) for row in metadata_rows}
    selectivity = {
        f"{key}={json.loads(value)}": count
        for key, value, count in global_metadata
        if (key, value) in user_metadata_values
    }
    context = {
        "user_memories": len(id_rows),
        "user_sessions": len({row[1] for row in session_rows}),
        "user_agent_memories": dict(Counter(row.agent_id for row in id_rows)),
        "metadata_filters": len(metadata_rows),
        "metadata_filter_rows_all_users": {
            "min": min(selectivity.values(), default=0),
            "max": max(selectivity.values(), default=0),
        },
        "_wire": wire,
    }
    return ops, context


class CpuMeter:
    """Who used the CPUs while a phase ran, and how long the benchmark waited for one.

    CPU: this process, the PostgreSQL server (the backends serving this database and the
    auxiliary processes such as the WAL writer), and everything else on the machine (other
    processes, kernel threads, hypervisor steal). Run-queue wait (``/proc/<pid>/schedstat``):
    time this process and its PostgreSQL backends were runnable but had no CPU. On a shared
    machine that wait, not the store, is what inflates p95/p99: a preempted operation waits a
    scheduler slice of several milliseconds.
    """

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.result: dict[str, Any] = {}

    @staticmethod
    def _process(pid: int | str) -> tuple[int, float] | None:
        """(CPU ticks, run-queue wait in s) of a process."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return None
        return ticks, run_queue_wait(pid)

    def _server(self) -> dict[int, tuple[bool, tuple[int, float]]]:
        """PostgreSQL processes: pid -> (is a backend of this database, (ticks, wait))."""
        if self.memory.backend != "postgresql":
            return {}
        with self.memory.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT pid, datname = current_database() FROM pg_stat_activity "
                "WHERE datname = current_database() OR datname IS NULL"
            ).all()
        found = {}
        for pid, ours in rows:
            usage = self._process(pid)
            if usage is not None:
                found[pid] = (bool(ours), usage)
        return found

    def __enter__(self) -> CpuMeter:
        self.server = self._server()
        self.machine = machine_cpu_seconds()
        self.own = self._process("self")
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        machine = machine_cpu_seconds()
        own = self._process("self")
        server = self._server()
        server_ticks, backend_wait = 0, 0.0
        for pid, (ours, (ticks, wait)) in server.items():
            before = self.server.get(pid, (ours, (0, 0.0)))[1]
            server_ticks += ticks - before[0]
            if ours:
                backend_wait += wait - before[1]
        result: dict[str, Any] = {"wall_s": round(wall, 2)}
        if own is not None and self.own is not None:
            own_cores = (own[0] - self.own[0]) / self.TICK / wall
            own_wait = (own[1] - self.own[1]) * 1000
            result.update(
                own_cores=round(own_cores, 2),
                postgres_cores=round(server_ticks / self.TICK / wall, 2),
                own_runqueue_wait_ms=round(own_wait, 1),
                postgres_backends_runqueue_wait_ms=round(backend_wait * 1000, 1),
                runqueue_wait_share=round((own_wait + backend_wait * 1000) / (wall * 1000), 4),
            )
            busy = (machine[0] - self.machine[0]) / wall
            result.update(
                machine_busy_cores=round(busy, 2),
                steal_cores=round((machine[1] - self.machine[1]) / wall, 2),
                other_cores=round(max(0.0, busy - own_cores - server_ticks / self.TICK / wall), 2),
            )
        self.result = result


def probed_pids(memory: Memory) -> list[int | str]:
    """What a ``RunQueueWait`` probes for every sample: this process and the PostgreSQL
    backends serving this database. Subtracting their wait gives the latency the store would
    have on a machine of its own; on PostgreSQL a partial correction: kernel threads
    (loopback softirq) and the server's auxiliary processes can be delayed too, and they are
    not counted. Call again once the pool holds the connections it will use."""
    pids: list[int | str] = ["self"]
    if memory.backend == "postgresql":
        with memory.engine.connect() as connection:
            pids.extend(
                connection.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend'"
                ).scalars()
            )
    return pids


def measure_queries(
    ops: list[Op],
    warmup: int,
    samples: int,
    rng: random.Random,
    probe: RunQueueWait,
    memory: Memory,
) -> None:
    gc.collect()
    for iteration, order in enumerate(shuffled_rounds(ops, warmup + samples, rng)):
        if iteration == warmup:
            probe.open(probed_pids(memory))
        for op in order:
            (rows, variant), timing = timed(op.run, iteration, wait=probe)
            elapsed, waited = timing.wall, timing.wait
            if iteration >= warmup:
                op.samples.append(elapsed)
                op.waits.append(waited)
                op.rows += rows
                if variant is not None:
                    op.variants.setdefault(variant, []).append(elapsed)
                    op.variant_waits.setdefault(variant, []).append(waited)


def load_dataset(memory: Memory, dataset: Dataset) -> dict[str, Any]:
    scopes: dict[tuple[str, str, str | None], Scope] = {}

    def scope(user: str, agent: str, session: str | None = None) -> Scope:
        key = (user, agent, session)
        if key not in scopes:
            scopes[key] = memory.scope(user=user, agent=agent, session=session)
        return scopes[key]

    rows = 0
    batch_sizes = []
    start = time.perf_counter()
    last_report = start
    for user, agent, session, items in dataset.batches:
        stored = scope(user, agent, session).add_many(items)
        rows += len(stored)
        batch_sizes.append(len(items))
        now = time.perf_counter()
        if now - last_report > 10:
            log(f"  loaded {rows:,} / {dataset.size:,} memories ({rows / (now - start):,.0f}/s)")
            last_report = now
    memories_seconds = time.perf_counter() - start
    scopes.clear()

    start = time.perf_counter()
    for user, agent, key, value, confidence in dataset.preferences:
        scope(user, agent).set_preference(key, value, confidence=confidence)
    pattern_ids: dict[tuple[str, str, str], int] = {}
    for user, agent, language, name, snippet, description, tags in dataset.patterns:
        pattern = scope(user, agent).record_pattern(
            language, name, snippet, description=description, tags=tags
        )
        pattern_ids[(user, language, name)] = pattern.id
    for user, agent, language, name in dataset.pattern_uses:
        scope(user, agent).use_pattern(pattern_ids[(user, language, name)])
    for user, agent, session, state in dataset.checkpoints:
        scope(user, agent, session).save_state(state, ttl=STATE_TTL)
    extras_seconds = time.perf_counter() - start
    extras = (
        len(dataset.preferences)
        + len(dataset.patterns)
        + len(dataset.pattern_uses)
        + len(dataset.checkpoints)
    )
    with memory.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT COUNT(*) FROM memories").scalar_one()
    if stored != dataset.size:
        raise RuntimeError(f"expected {dataset.size} memories in the database, found {stored}")
    return {
        "memories": rows,
        "add_many_calls": len(batch_sizes),
        "batch_size_mean": round(rows / len(batch_sizes), 1),
        "batch_size_p50": percentile(batch_sizes, 0.5),
        "batch_size_max": max(batch_sizes),
        "seconds": round(memories_seconds, 3),
        "rows_per_s": round(rows / memories_seconds, 1),
        "extras_single_writes": extras,
        "extras_seconds": round(extras_seconds, 3),
        "extras_writes_per_s": round(extras / extras_seconds, 1),
    }


def measure_inserts(
    memory: Memory,
    dataset: Dataset,
    user: str,
    single: int,
    rounds: int,
    rng: random.Random,
    probe: RunQueueWait,
) -> dict[str, Any]:
    gen = Generator(0)
    gen.rng = rng
    gen.factory = dataset.factory  # keeps contents unique against everything stored
    profiles = {profile.user: profile for profile in dataset.users}
    profile = profiles[user]
    sessions = cycle(rng, profile.sessions, single)
    gc.collect()

    latencies: list[float] = []
    waits: list[float] = []
    scopes: dict[tuple[str, str, str | None], Scope] = {}
    started = time.perf_counter()
    for index in range(single):
        agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        key = (user, agent, sessions[index])
        if key not in scopes:
            scopes[key] = memory.scope(user=user, agent=agent, session=sessions[index])
        item = gen.memory(profile, agent, rng.choice(("working", "working", "episodic")))
        content = item.pop("content")
        _, timing = timed(functools.partial(scopes[key].add, content, **item), wait=probe)
        latencies.append(timing.wall)
        waits.append(timing.wait)
        if index == 0:  # the pool may have opened a connection for the first write
            probe.open(probed_pids(memory))
    single_seconds = time.perf_counter() - started

    batched: dict[str, Any] = {}
    for size in (500, 1000):
        batch_latencies: list[float] = []
        batch_waits: list[float] = []
        rows = 0
        for _ in range(rounds):
            other = profiles[rng.choice(sorted(profiles))]
            agent = rng.choice(AGENTS)
            scope = memory.scope(user=other.user, agent=agent, session=gen.session_id())
            items = []
            for _ in range(size):
                roll = rng.random()
                tier = "working" if roll < 0.55 else "episodic" if roll < 0.95 else "semantic"
                items.append(gen.memory(other, agent, tier))
            stored, timing = timed(scope.add_many, items, wait=probe)
            rows += len(stored)
            batch_latencies.append(timing.wall)
            batch_waits.append(timing.wait)
        seconds = sum(batch_latencies) / 1000
        busy = (sum(batch_latencies) - sum(batch_waits)) / 1000
        batched[str(size)] = {
            "batches": rounds,
            "rows": rows,
            "rows_per_s": round(rows / seconds, 1),
            "rows_per_s_without_cpu_wait": round(rows / busy, 1),
            "batch_ms": latency_summary(batch_latencies, batch_waits),
        }
    return {
        "single": {
            "count": single,
            "per_s": round(single / single_seconds, 1),
            "per_s_without_cpu_wait": round(single / (single_seconds - sum(waits) / 1000), 1),
            "latency_ms": latency_summary(latencies, waits),
        },
        "batched": batched,
    }


# -- one case -----------------------------------------------------------------------------------


def run_case(backend: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    case_started = time.perf_counter()
    log(f"{backend} @ {size:,}: generating data (seed {args.seed})")
    dataset = Generator(args.seed * 1_000_003 + size).build(size)
    user = pick_target_user(dataset)
    tiers = Counter(item["tier"] for batch in dataset.batches for item in batch[3])
    with_metadata = sum(1 for batch in dataset.batches for item in batch[3] if item["metadata"])
    lengths = [len(item["content"]) for batch in dataset.batches for item in batch[3]]
    data_summary = {
        "users": len(dataset.users),
        "agents": len(AGENTS),
        "sessions": sum(len(p.sessions) for p in dataset.users),
        "tiers": dict(sorted(tiers.items())),
        "with_metadata_share": round(with_metadata / size, 3),
        "content_chars": {
            "min": min(lengths),
            "mean": round(sum(lengths) / len(lengths), 1),
            "max": max(lengths),
        },
        "per_user": {"min": min(dataset.per_user.values()), "max": max(dataset.per_user.values())},
        "preferences": len(dataset.preferences),
        "code_patterns": len(dataset.patterns),
        "checkpoints": len(dataset.checkpoints),
        "target_user": user,
        "target_user_memories": dataset.per_user[user],
    }
    with scratch_database(backend, args.postgres_url, "membench") as url:
        memory = open_memory(url, args.embedder)
        wire = None
        try:
            info = server_info(memory)
            baseline = 0
            if backend == "postgresql":
                with memory.engine.connect() as connection:
                    baseline = connection.exec_driver_sql(
                        "SELECT pg_database_size(current_database())"
                    ).scalar_one()
            log(f"{backend} @ {size:,}: loading {size:,} memories with add_many")
            with CpuMeter(memory) as load_cpu:
                load = load_dataset(memory, dataset)
            load["cpu"] = load_cpu.result
            log(
                f"{backend} @ {size:,}: loaded in {load['seconds']} s "
                f"({load['rows_per_s']:,.0f} rows/s); extras {load['extras_seconds']} s"
            )
            vacuum_analyze(memory)
            size_info = database_size(memory, url, baseline, load["memories"])
            rng = random.Random(args.seed * 7 + size)
            iterations = args.warmup + args.samples
            ops, context = build_ops(memory, dataset, user, iterations, rng)
            wire = context.pop("_wire")
            batches = dataset.batches
            dataset.batches = []  # drop 100k dicts before timing: less GC work
            del batches
            gc.collect()
            log(
                f"{backend} @ {size:,}: {len(ops)} operations x {args.samples} samples "
                f"(+{args.warmup} warm-up), interleaved"
            )
            probe = RunQueueWait(probed_pids(memory))
            try:
                with CpuMeter(memory) as query_cpu:
                    measure_queries(ops, args.warmup, args.samples, rng, probe, memory)
                context["cpu"] = query_cpu.result
                wire.invalidate()  # switched to autocommit: never give it back to the pool
                wire = None
                log(
                    f"{backend} @ {size:,}: inserts ({args.single_inserts} single, "
                    f"{args.batch_rounds} x 500 and x 1000 batched)"
                )
                probe.open(probed_pids(memory))
                with CpuMeter(memory) as insert_cpu:
                    inserts = measure_inserts(
                        memory, dataset, user, args.single_inserts, args.batch_rounds, rng, probe
                    )
                inserts["cpu"] = insert_cpu.result
            finally:
                probe.close()
        finally:
            if wire is not None:
                wire.invalidate()
            memory.close()

    floors = {op.name: op for op in ops if op.name.startswith("floor.")}
    latency: dict[str, Any] = {}
    for op in ops:
        stats = latency_summary(op.samples, op.waits)
        stats["rows_mean"] = round(op.rows / max(1, len(op.samples)), 2)
        if op.floor is not None:
            floor = latency_summary(floors[op.floor].samples)
            stats["floor"] = op.floor
            stats["over_floor_p50"] = round(stats["p50"] - floor["p50"], 4)
            stats["x_floor_p50"] = round(stats["p50"] / floor["p50"], 2)
        if op.variants:
            stats["variants"] = {
                name: latency_summary(values, op.variant_waits[name])
                for name, values in sorted(op.variants.items())
            }
        latency[op.name] = stats
    return {
        "benchmark": "store_throughput",
        "backend": backend,
        "size": size,
        "seed": args.seed,
        "embedder": args.embedder,
        "samples": args.samples,
        "warmup": args.warmup,
        "server": info,
        "data": data_summary,
        "query_context": context,
        "load": load,
        "inserts": inserts,
        "latency_ms": latency,
        "database_size": size_info,
        "targets": evaluate_targets(backend, size, latency, size_info),
        "seconds": round(time.perf_counter() - case_started, 1),
    }


def evaluate_targets(
    backend: str, size: int, latency: dict[str, Any], size_info: dict[str, Any]
) -> list[dict[str, Any]]:
    targets = []
    if backend == "sqlite" and size >= LATENCY_TARGET_SIZE:
        for name, stats in latency.items():
            if name.startswith("floor."):
                continue
            # Each filter variant is a query of its own (a common metadata value must not
            # hide behind a rare one in the mix).
            checks = [(name, stats)] + [
                (f"{name}[{variant}]", vstats)
                for variant, vstats in stats.get("variants", {}).items()
            ]
            for label, values in checks:
                adjusted = values["without_cpu_wait"]["p95"]
                targets.append(
                    {
                        "target": f"p95 {label} < {LATENCY_TARGET_MS:g} ms",
                        "value": values["p95"],
                        "value_without_cpu_wait": adjusted,
                        "pass_as_measured": values["p95"] < LATENCY_TARGET_MS,
                        # The verdict: what the store costs, not what other processes took.
                        "pass": adjusted < LATENCY_TARGET_MS,
                    }
                )
    targets.append(
        {
            "target": f"database size < {SIZE_TARGET_MB_PER_10K:g} MB per 10,000 memories",
            "value": size_info["mb_per_10k"],
            "pass_as_measured": size_info["mb_per_10k"] < SIZE_TARGET_MB_PER_10K,
            "pass": size_info["mb_per_10k"] < SIZE_TARGET_MB_PER_10K,
        }
    )
    return targets


def target_line(backend: str, size: int, target: dict[str, Any]) -> str:
    verdict = "PASS" if target["pass"] else "FAIL"
    if target["pass"] and not target["pass_as_measured"]:
        verdict = "PASS*"
    line = f"{verdict:<6}{backend} @ {size:,}: {target['target']}: measured {target['value']}"
    if "value_without_cpu_wait" in target:
        line += f", without CPU wait {target['value_without_cpu_wait']}"
    if verdict == "PASS*":
        line += " (* over as measured, only because other processes held the CPU)"
    return line


# -- report -------------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    backend, size = result["backend"], result["size"]
    data, ctx, load = result["data"], result["query_context"], result["load"]
    print()
    print(
        f"=== {backend} | {size:,} memories | seed {result['seed']} | "
        f"{result['samples']} samples/op (+{result['warmup']} warm-up) | "
        f"case took {result['seconds']} s ==="
    )
    print("server: " + ", ".join(f"{k}={v}" for k, v in result["server"].items()))
    print(
        f"data: {data['users']} users x {data['agents']} agents, {data['sessions']:,} sessions, "
        f"tiers {data['tiers']}, metadata on {data['with_metadata_share']:.0%}, content "
        f"{data['content_chars']['min']}-{data['content_chars']['max']} chars "
        f"(mean {data['content_chars']['mean']}), per user {data['per_user']['min']:,}-"
        f"{data['per_user']['max']:,}"
    )
    print(
        f"      {data['preferences']} preferences, {data['code_patterns']} code patterns, "
        f"{data['checkpoints']:,} session checkpoints"
    )
    print(
        f"queried user: {data['target_user']} ({ctx['user_memories']:,} memories, "
        f"{ctx['user_sessions']} sessions; per agent {ctx['user_agent_memories']}); "
        f"metadata filters match {ctx['metadata_filter_rows_all_users']['min']:,}-"
        f"{ctx['metadata_filter_rows_all_users']['max']:,} rows across all users"
    )
    print()
    print(
        f"load   add_many: {load['memories']:,} rows in {load['seconds']:.2f} s = "
        f"{load['rows_per_s']:,.0f} rows/s ({load['add_many_calls']:,} calls, one per "
        f"user/agent/session; batch mean {load['batch_size_mean']}, max "
        f"{load['batch_size_max']})"
    )
    load_cpu = load.get("cpu", {})
    if "own_runqueue_wait_ms" in load_cpu:
        waited = (
            load_cpu["own_runqueue_wait_ms"] + load_cpu["postgres_backends_runqueue_wait_ms"]
        ) / 1000
        busy = load["seconds"] + load["extras_seconds"]
        share = min(0.95, waited / busy) if busy else 0.0
        print(
            f"       (the load phase waited {share:.0%} of its time for a CPU: about "
            f"{load['rows_per_s'] / (1 - share):,.0f} rows/s on an unshared machine)"
        )
    print(
        f"       preferences/patterns/checkpoints: {load['extras_single_writes']:,} single "
        f"writes in {load['extras_seconds']:.2f} s = {load['extras_writes_per_s']:,.0f}/s"
    )
    single = result["inserts"]["single"]
    lat = single["latency_ms"]
    adj = lat["without_cpu_wait"]
    print(
        f"insert Scope.add x {single['count']:,} (1 txn each): {single['per_s']:,.0f} inserts/s"
        f" ({single['per_s_without_cpu_wait']:,.0f}/s without CPU wait); latency p50 "
        f"{lat['p50']:.3f} p95 {lat['p95']:.3f} p99 {lat['p99']:.3f} ms (without CPU wait "
        f"{adj['p50']:.3f} / {adj['p95']:.3f} / {adj['p99']:.3f})"
    )
    for batch_size, stats in result["inserts"]["batched"].items():
        ms = stats["batch_ms"]
        print(
            f"insert Scope.add_many batch {batch_size:>4} x {stats['batches']}: "
            f"{stats['rows_per_s']:,.0f} rows/s ({stats['rows_per_s_without_cpu_wait']:,.0f}"
            f" without CPU wait); per batch p50 {ms['p50']:.1f} ms, max {ms['max']:.1f} ms"
        )
    print()
    print(
        "latencies in ms; * = without the time spent waiting for a CPU (run-queue wait of "
        "this process and its postgres backends, measured per sample)"
    )
    latency = result["latency_ms"]

    def row(label: str, stats: dict[str, Any], *extra: str) -> list[object]:
        adj = stats["without_cpu_wait"]
        return [
            label,
            *(stats[key] for key in ("p50", "p95", "p99", "max")),
            *extra,
            "|",
            adj["p50"],
            adj["p95"],
            adj["p99"],
            f"{stats['cpu_wait_share']:.0%}",
        ]

    rows = []
    for name, stats in latency.items():
        floor_text = ratio = verdict = ""
        if "floor" in stats:
            floor = latency[stats["floor"]]
            floor_text = f"{floor['p50']:.3f}/{floor['p95']:.3f}"
            ratio = f"{stats['x_floor_p50']:.1f}x"
            verdict = "ok" if stats["without_cpu_wait"]["p95"] < LATENCY_TARGET_MS else "OVER"
        extra = (f"{stats['rows_mean']:.1f}", floor_text, ratio)
        rows.append(row(OP_LABELS.get(name, name), stats, *extra) + [verdict])
        for variant, vstats in stats.get("variants", {}).items():
            rows.append(row("    " + variant, vstats, "", "", "") + [""])
    header = [
        "operation",
        "p50",
        "p95",
        "p99",
        "max",
        "rows",
        "floor p50/p95",
        "x floor",
        "|",
        "p50*",
        "p95*",
        "p99*",
        "wait",
        "<5ms*",
    ]
    print(table(header, rows, digits=3))
    print()
    cpus = os.cpu_count() or 0
    for phase, cpu in (
        ("load", load.get("cpu", {})),
        ("queries", ctx.get("cpu", {})),
        ("inserts", result["inserts"].get("cpu", {})),
    ):
        if "other_cores" not in cpu:
            continue
        wait = cpu["own_runqueue_wait_ms"] + cpu["postgres_backends_runqueue_wait_ms"]
        noisy = (
            cpu["runqueue_wait_share"] > NOISY_WAIT_SHARE and cpu["other_cores"] > NOISY_OTHER_CORES
        )
        warning = "  <- CPU contention: tails inflated" if noisy else ""
        print(
            f"cpu during {phase:<7} {cpu['wall_s']:>5.1f} s: cores used by this process "
            f"{cpu['own_cores']:.2f}, postgres {cpu['postgres_cores']:.2f}, other processes "
            f"{cpu['other_cores']:.2f} (of {cpus}); waited for a CPU {wait:,.0f} ms "
            f"({cpu['runqueue_wait_share']:.1%} of the time){warning}"
        )
    size_info = result["database_size"]
    if backend == "sqlite":
        files = size_info["files_bytes"]
        print(
            f"size: {size_info['total_bytes'] / 1e6:.2f} MB on disk (db {files['db']:,} B, "
            f"wal {files['-wal']:,} B, shm {files['-shm']:,} B; {size_info['page_count']:,} "
            f"pages of {size_info['page_size']}, {size_info['freelist_pages']} free) = "
            f"{size_info['mb_per_10k']:.2f} MB per 10,000 memories"
        )
        if size_info["objects_bytes"]:
            top = list(size_info["objects_bytes"].items())[:8]
            print("      largest objects: " + ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in top))
    else:
        rel = size_info["relations_bytes"]
        parts = []
        for name in size_info["counted_tables"]:
            det = size_info["relation_detail_bytes"][name]
            parts.append(
                f"{name} {rel[name] / 1e6:.2f} MB (heap {det['heap'] / 1e6:.2f}, "
                f"indexes {det['indexes'] / 1e6:.2f}, toast {det['toast'] / 1e6:.2f})"
            )
        print(
            "size: " + " + ".join(parts) + f" = {size_info['mb_per_10k']:.2f} MB per "
            "10,000 memories"
        )
        print(
            f"      pg_database_size delta {size_info['database_delta_bytes'] / 1e6:.2f} MB = "
            f"{size_info['database_delta_mb_per_10k']:.2f} MB per 10,000 memories (all tables, "
            f"incl. preferences, patterns, session state)"
        )
    print()
    for target in result["targets"]:
        print(target_line(backend, size, target))


OP_LABELS = {
    "floor.read": "floor: SELECT 1 in read txn",
    "floor.write": "floor: SELECT 1 in write txn",
    "floor.wire": "wire: SELECT 1 on held conn",
    "get": "get (read + UPDATE..RETURNING)",
    "list.recent": "list (no filter) limit 20",
    "list.tier": "list tier=.. limit 20",
    "list.metadata": "list metadata={k: v} limit 20",
    "list.session": "list session=.. limit 20",
    "get_preference": "get_preference",
    "load_state": "load_state",
    "find_patterns.language": "find_patterns language=..",
    "find_patterns.text": "find_patterns text=..",
}


def versions() -> dict[str, Any]:
    """The versions behind the figures, beside the run's facts (``measure.run_facts``)."""
    import psycopg
    import pydantic

    return {
        "sqlalchemy": sa.__version__,
        "psycopg": psycopg.__version__,
        "pydantic": pydantic.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default: both)",
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="comma-separated memory counts (default: 10000,100000)",
    )
    parser.add_argument(
        "--samples", type=int, default=1000, help="timed samples per query (default: 1000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed rounds before the samples (default: 100)"
    )
    parser.add_argument(
        "--single-inserts", type=int, default=1000, help="Scope.add calls to time (default: 1000)"
    )
    parser.add_argument(
        "--batch-rounds",
        type=int,
        default=3,
        help="add_many batches of 500 and of 1000 to time (default: 3 each)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="an existing database to connect to for CREATE/DROP DATABASE of a "
        f"throwaway benchmark database (default: {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="RNG seed (default: 20240601)")
    parser.add_argument(
        "--embedder",
        choices=("none", "default"),
        default="none",
        help="none (default): measure the store alone, no vectors; default: "
        "the library's default embedder computes a vector on every write",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write the JSON lines (one per backend and size) to PATH",
    )
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in args.backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {backend!r}: use sqlite and/or postgresql")
    try:
        args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if any(size < 1000 for size in args.sizes):
        parser.error("--sizes: at least 1000 memories each")
    if args.samples < 1 or args.warmup < 0 or args.single_inserts < 1 or args.batch_rounds < 1:
        parser.error("--samples, --single-inserts and --batch-rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the clean-up of temporary databases

    signal.signal(signal.SIGTERM, terminate)
    env = versions()
    started = time.perf_counter()
    print("store_throughput: " + ", ".join(f"{k}={v}" for k, v in (run_facts() | env).items()))
    print(
        f"args: backends={','.join(args.backends)} sizes={','.join(map(str, args.sizes))} "
        f"samples={args.samples} warmup={args.warmup} single_inserts={args.single_inserts} "
        f"batch_rounds={args.batch_rounds} seed={args.seed} embedder={args.embedder}"
    )
    results = []
    for backend in args.backends:
        for size in args.sizes:
            result = run_case(backend, size, args)
            result["environment"] = env
            results.append(result)
            print_report(result)
            sys.stdout.flush()

    print()
    print("=== targets ===")
    failed = 0
    for result in results:
        for target in result["targets"]:
            failed += not target["pass"]
            print(target_line(result["backend"], result["size"], target))
    if "sqlite" in args.backends and not any(s >= LATENCY_TARGET_SIZE for s in args.sizes):
        print(f"n/a   the latency target is defined at {LATENCY_TARGET_SIZE:,} memories on SQLite")
    print(f"total run time {time.perf_counter() - started:.0f} s; loadavg now {load_average()}")
    print()
    lines = [emit(result, sort_keys=True) for result in results]
    if args.json:
        Path(args.json).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
