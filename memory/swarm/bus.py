"""The swarm bus on Redis: tasks with leases, findings, conflicts, escalations, context.

One :class:`SwarmBus` is one agent of one swarm talking to one Redis (>= 6, standalone: the
Lua scripts touch keys they find in the queue). Who the agent is comes from its
configuration (``agent``, and the Ed25519 ``key`` that signs its custody entries), never
from a message.

Work flows through a Redis Stream per swarm with one consumer group: ``next_task`` (also
``get_unassigned_task``) takes the next entry, reclaiming first any entry whose worker has
been silent longer than the lease (``XAUTOCLAIM``), and ``claim_task`` wins the task in a
Lua script: exactly one caller moves it to IN_PROGRESS with a lease (server time) and a new
fencing token. ``heartbeat`` extends the lease; ``complete_task``, ``fail_task``,
``release_task`` and ``hold_task`` check the token in a script, so a worker whose lease
was taken cannot complete the task twice. Every step appends a signed custody entry to the
task's envelope (:mod:`memory.swarm.envelope`), compare-and-set on the chain's length.

Whatever the bus reads (a task it claims, findings it compares) is verified: a chain that
does not verify, or whose last hop does not match the stored state, is refused with
:class:`SignatureError` while ``USE_SWARM_SIGNATURE_ENFORCEMENT`` is on for the swarm, and
warned about (a log line once per problem kind, the ``memory.swarm.signature_failures``
metric each time) while it is off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar, cast

import redis
import redis.exceptions

from flags import USE_SWARM_SIGNATURE_ENFORCEMENT, EvaluationContext, FlagEvaluator
from memory import InvalidInputError, Memory, NotFoundError, PermissionDeniedError
from memory.swarm.envelope import (
    AgentKey,
    CustodyEntry,
    Envelope,
    SpeechAct,
    canonical,
    load_public_key,
    verify,
)
from memory.swarm.errors import LeaseLostError, SignatureError, SwarmError, SwarmUnavailableError
from memory.swarm.scan import ScanReport, scan
from memory.swarm.schema import (
    CONTEXT_TTL,
    ESCALATION_TTL,
    FINDING_TTL,
    LOW_CONFIDENCE,
    REGISTRY_TTL,
    SESSION_TTL,
    TASK_TTL,
    TaskStatus,
    check_citations,
    check_confidence,
    check_name,
    check_text,
    json_value,
)
from memory.telemetry.instruments import instruments

__all__ = [
    "Claim",
    "Conflict",
    "Context",
    "Escalation",
    "Finding",
    "Registry",
    "RememberFindings",
    "SwarmBus",
    "SwarmHealth",
    "Task",
    "connect",
]

logger = logging.getLogger("memory.swarm")

GROUP = "workers"
DEFAULT_LEASE = timedelta(seconds=30)
# How long the bus trusts its copy of a swarm's registry (keys, readers) before reading again;
# an unknown agent's key is always looked up at once.
REGISTRY_CACHE_SECONDS = 5.0
MAX_FINDINGS_COMPARED = 1000
WARNING_INTERVAL_SECONDS = 60.0

R = TypeVar("R")


def connect(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A redis-py client for ``url``: ``redis://[user:password@]host:port/db`` (AUTH or an
    ACL user), ``rediss://`` for TLS (``?ssl_ca_certs=...`` and the other ssl options of
    redis-py in the query), ``unix://``. Strings come back decoded."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInputError(
            f"redis url: must start with redis://, rediss:// or unix://, not {url!r}"
        )
    try:
        return redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    except ValueError as error:
        raise InvalidInputError(f"redis url: {error}") from None


@contextmanager
def _redis_errors(client: redis.Redis) -> Iterator[None]:
    try:
        yield
    except redis.exceptions.AuthenticationError as error:
        raise SwarmUnavailableError(f"Redis refused the credentials: {error}") from None
    except redis.exceptions.NoPermissionError as error:
        raise SwarmUnavailableError(f"Redis ACL refused a command: {error}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        where = client.connection_pool.connection_kwargs
        raise SwarmUnavailableError(
            f"Redis at {where.get('host', where.get('path', '?'))}:{where.get('port', '')} "
            f"is unreachable: {error}"
        ) from None
    except redis.exceptions.ResponseError as error:
        raise SwarmError(f"Redis refused a command: {error}") from None
    except redis.exceptions.RedisError as error:
        raise SwarmError(f"Redis: {error}") from None


def _too_old(version: str) -> bool:
    parts = [int(part) for part in version.split(".")[:2] if part.isdigit()]
    return tuple(parts) < (6, 2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ms(ttl: timedelta) -> int:
    return int(ttl.total_seconds() * 1000)


def _digest(value: Any) -> str | None:
    return None if value is None else hashlib.sha256(canonical(value)).hexdigest()


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A task as stored: what to do, where it is, who holds it, and its envelope."""

    id: str
    swarm: str
    description: str
    data: Any
    type: str
    status: TaskStatus
    assignee: str | None
    created_at: str
    updated_at: str
    result: Any
    claims: int
    envelope: Envelope


@dataclass(frozen=True)
class Claim:
    """A won claim: the task, the fencing token that proves it is ours, and whether it was
    reclaimed from a worker whose lease expired."""

    task: Task
    token: int
    reclaimed: bool


@dataclass(frozen=True)
class Finding:
    """A worker's finding on a task: a claim with a confidence and its citations."""

    id: str
    swarm: str
    task: str
    claim: str
    confidence: float
    citations: tuple[str, ...]
    speech_act: SpeechAct
    worker: str
    at: str
    contradicts: tuple[str, ...]
    envelope: Envelope


@dataclass(frozen=True)
class Conflict:
    """Two findings that disagree: on the same claim by more than the threshold
    (``reason="confidence"``), or one declared to contradict the other."""

    first: Finding
    second: Finding
    reason: str


@dataclass(frozen=True)
class Escalation:
    """A question for a human about a task, open until someone resolves it."""

    id: str
    swarm: str
    task: str
    reason: str
    findings: tuple[str, ...]
    cause: str
    status: str
    raised_by: str
    created_at: str
    resolved_by: str | None
    resolution: str | None
    envelope: Envelope


@dataclass(frozen=True)
class Context:
    """Shared working context of a swarm: notes, a timeline, topics and free data."""

    scope: str
    name: str
    notes: list[Any]
    timeline: list[Any]
    topics: list[Any]
    shared: dict[str, Any]
    updated_at: str


@dataclass(frozen=True)
class Registry:
    """A swarm's registry: its agents (role, base64 Ed25519 public key), the swarms allowed
    to read it, and its artifacts (name -> URI)."""

    swarm: str
    agents: Mapping[str, tuple[str, str]]
    readers: frozenset[str]
    artifacts: Mapping[str, str]


@dataclass(frozen=True)
class SwarmHealth:
    """What ``health_check`` found; ``ok`` when ``problems`` is empty."""

    redis_version: str
    round_trip_ms: float
    aof_enabled: bool
    queue_length: int
    pending: int
    open_escalations: int
    agents_registered: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the bus is usable as configured."""
        return not self.problems


@dataclass(frozen=True)
class RememberFindings:
    """Opt-in: findings at or above ``min_confidence`` become semantic memories of ``user``,
    written as ``agent``, with their citations and tracking id in the metadata, so the
    agent's ``inject`` sees what the swarm learned."""

    memory: Memory
    user: str
    agent: str
    min_confidence: float

    def __post_init__(self) -> None:
        check_confidence(self.min_confidence)


# -- Lua ------------------------------------------------------------------------------------------

# The server's clock in ms: leases never depend on a worker's clock.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: task, queue. ARGV: task id, task ttl ms, queue ttl ms, group, then field/value pairs.
# A queue is born with its consumer group, so that the scripts below find it.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[4], '0', 'MKSTREAM')
end
-- XADD first: it fails on a queue key of the wrong type, and then nothing is written.
local id = redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', id, unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return id
"""

# KEYS: queue. ARGV: group, consumer, min idle ms, key prefix.
# The next entry for this consumer: one whose worker went silent for a lease, else a new one;
# returned with the task's fields so claiming costs no extra round trip.
_NEXT = """
for attempt = 1, 10 do
  local entry = nil
  local auto = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', 1)
  if auto[2][1] then entry = auto[2][1] end
  if not entry then
    local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
      'STREAMS', KEYS[1], '>')
    if read then entry = read[1][2][1] end
  end
  if not entry then return false end
  local fields = entry[2]
  if fields and fields[2] then
    local task = redis.call('HGETALL', ARGV[4] .. 'task:' .. fields[2])
    if #task > 0 then return {entry[1], fields[2], task} end
  end
  -- The entry or its task is gone (expired, deleted): forget it.
  redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  redis.call('XDEL', KEYS[1], entry[1])
end
return false
"""

# KEYS: task, queue. ARGV: group, consumer/agent, lease ms, custody entry, expected chain
# length, time text.
_CLAIM = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'custody_n', 'assignee', 'entry')
local status = h[1]
if not status then return {'gone'} end
if status == 'COMPLETED' or status == 'FAILED' then
  redis.call('XACK', KEYS[2], ARGV[1], h[5])
  redis.call('XDEL', KEYS[2], h[5])
  return {'final', status}
end
if status == 'IN_PROGRESS' and tonumber(h[2]) > now then return {'leased', h[4]} end
if status ~= 'PENDING' and status ~= 'IN_PROGRESS' then return {'held', status} end
if h[3] ~= ARGV[5] then return {'stale'} end
-- Own the stream entry (and restart its idle clock), so XAUTOCLAIM finds it after a lease.
-- First: a script that fails (NOGROUP) must fail before it writes, as Redis keeps the
-- writes a script made before an error.
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, h[5], 'JUSTID')
local n = tonumber(h[3])
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'status', 'IN_PROGRESS', 'assignee', ARGV[2],
  'lease_until', now + tonumber(ARGV[3]), 'updated_at', ARGV[6],
  'custody:' .. n, ARGV[4], 'custody_n', n + 1)
local reclaimed = 0
if status == 'IN_PROGRESS' then reclaimed = 1 end
return {'ok', token, reclaimed, h[4]}
"""
)

# KEYS: task, queue. ARGV: group, agent, token, lease ms.
_HEARTBEAT = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'assignee', 'token', 'entry')
if h[1] ~= 'IN_PROGRESS' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, h[4], 'JUSTID')
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[4]))
return 1
"""
)

# KEYS: task, queue. ARGV: group, agent, token, expected chain length, custody entry, new
# status, result JSON ('' for none), time text, requeue 1/0, task id, task ttl, queue ttl.
_FINISH = """
local h = redis.call('HMGET', KEYS[1], 'status', 'assignee', 'token', 'custody_n', 'entry')
local held = h[1] == 'NEEDS_ASSIST' or h[1] == 'BLOCKED'
if not (h[1] == 'IN_PROGRESS' or held) or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then
  return {'lost', h[1] or '', h[2] or ''}
end
if h[4] ~= ARGV[4] then return {'stale'} end
local n = tonumber(h[4])
redis.call('HSET', KEYS[1], 'status', ARGV[6], 'updated_at', ARGV[8], 'lease_until', 0,
  'custody:' .. n, ARGV[5], 'custody_n', n + 1)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[7]) end
if ARGV[6] == 'COMPLETED' then redis.call('HINCRBY', KEYS[1], 'completions', 1) end
if ARGV[6] == 'PENDING' then redis.call('HSET', KEYS[1], 'assignee', '') end
-- The stream entry is done with: finished, held out of the queue, or queued anew.
redis.call('XACK', KEYS[2], ARGV[1], h[5])
redis.call('XDEL', KEYS[2], h[5])
if ARGV[9] == '1' then
  local id = redis.call('XADD', KEYS[2], '*', 'task', ARGV[10])
  redis.call('HSET', KEYS[1], 'entry', id)
  redis.call('PEXPIRE', KEYS[2], ARGV[12])
end
redis.call('PEXPIRE', KEYS[1], ARGV[11])
return {'ok'}
"""

# KEYS: record, index, task. ARGV: swarm, ttl ms, index score (time in µs), record id,
# field/value pairs.
# A finding or an escalation, written only under an existing task of the same swarm.
_UNDER_TASK = """
local swarm = redis.call('HGET', KEYS[3], 'swarm')
if not swarm then return 'no_task' end
if swarm ~= ARGV[1] then return 'other_swarm' end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 'ok'
"""

# KEYS: escalation, open index. ARGV: expected chain length, custody entry, resolver,
# resolution, time text, escalation id.
_RESOLVE = """
local h = redis.call('HMGET', KEYS[1], 'status', 'custody_n')
if not h[1] then return 'gone' end
if h[1] ~= 'open' then return 'resolved' end
if h[2] ~= ARGV[1] then return 'stale' end
local n = tonumber(h[2])
redis.call('HSET', KEYS[1], 'status', 'resolved', 'resolved_by', ARGV[3],
  'resolution', ARGV[4], 'resolved_at', ARGV[5], 'custody:' .. n, ARGV[2], 'custody_n', n + 1)
redis.call('ZREM', KEYS[2], ARGV[6])
return 'ok'
"""


def _task_state(status: str, assignee: str, result: Any) -> dict[str, Any]:
    """What a task's custody hop records of the state it leaves: checked against the hash."""
    return {"status": status, "assignee": assignee, "result": _digest(result)}


class SwarmBus:
    """One agent of one swarm on the bus.

    - ``client``: a redis-py client (see :func:`connect`), or use :meth:`open` with a URL;
    - ``swarm``, ``agent``: who this is (ids: letters, digits, ``_ . @ -``);
    - ``key``: the agent's Ed25519 key; without one its custody entries are unsigned (which
      other agents refuse while signature enforcement is on);
    - ``flags``: where ``USE_SWARM_SIGNATURE_ENFORCEMENT`` is decided (default: the
      environment and the registry; with ``remember``, its ``Memory``'s flags);
    - ``prefix``: prepended to every key; ``lease`` and ``task_ttl``: see the module;
    - ``remember``: turn confident findings into memories (:class:`RememberFindings`).
    """

    def __init__(
        self,
        client: redis.Redis,
        swarm: str,
        agent: str,
        *,
        key: AgentKey | None = None,
        flags: FlagEvaluator | None = None,
        prefix: str = "",
        lease: timedelta = DEFAULT_LEASE,
        task_ttl: timedelta = TASK_TTL,
        remember: RememberFindings | None = None,
    ) -> None:
        self.swarm = check_name("swarm", swarm)
        self.agent = check_name("agent", agent)
        if not isinstance(prefix, str) or any(c in prefix for c in "*?[]\\ \n"):
            raise InvalidInputError(f"prefix: must be text without glob characters, not {prefix!r}")
        if key is not None and not isinstance(key, AgentKey):
            raise InvalidInputError(f"key: must be an AgentKey, not {type(key).__name__}")
        for name, value in (("lease", lease), ("task_ttl", task_ttl)):
            if not isinstance(value, timedelta) or value.total_seconds() < 0.01:
                raise InvalidInputError(f"{name}: must be a timedelta of at least 10 ms")
        # redis-py annotates the sync client's replies as ``Awaitable[T] | T`` (one set of
        # stubs for both clients); held as Any, every reply is what the sync client returns.
        self._redis: Any = cast(Any, client)
        self._key = key
        self.prefix = prefix
        self._lease_ms = _ms(lease)
        self._task_ttl_ms = _ms(task_ttl)
        self._remember = remember
        if flags is None:
            flags = remember.memory.flags if remember is not None else FlagEvaluator()
        self._flags = flags
        self._flag_context = EvaluationContext(user_id=self.swarm, agent_id=self.agent)
        self._registries: dict[str, tuple[float, Registry]] = {}
        self._logged_at = -math.inf
        self._unlogged = 0
        self.queue_key = f"{prefix}swarm:queue:{self.swarm}"
        register = client.register_script
        self._create, self._next = register(_CREATE), register(_NEXT)
        self._claim, self._heartbeat = register(_CLAIM), register(_HEARTBEAT)
        self._finish, self._under_task = register(_FINISH), register(_UNDER_TASK)
        self._resolve = register(_RESOLVE)
        with self._errors():
            version = str(self._redis.info("server").get("redis_version", "0"))
            if _too_old(version):
                raise SwarmUnavailableError(
                    f"the swarm bus needs Redis 6.2 or later (XAUTOCLAIM), not {version}"
                )

    @classmethod
    def open(cls, url: str, swarm: str, agent: str, **options: Any) -> SwarmBus:
        """A bus on the Redis at ``url`` (see :func:`connect`); options as for the class."""
        return cls(connect(url), swarm, agent, **options)

    def close(self) -> None:
        """Close the connections."""
        self._redis.close()

    def __enter__(self) -> SwarmBus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _errors(self) -> Any:
        return _redis_errors(self._redis)

    def _queue_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script that uses the queue's consumer group, making the group first if
        this is the swarm's first worker (or the queue expired, idle for a day)."""
        with self._errors():
            try:
                return script(keys=keys, args=args)
            except redis.exceptions.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                self._ensure_group()
                return script(keys=keys, args=args)

    def _ensure_group(self) -> None:
        # Made when a worker first asks for work (NOGROUP), not when a bus opens: opening
        # one to read (memctl swarm task show, escalations list) writes nothing.
        try:
            self._redis.xgroup_create(self.queue_key, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        # MKSTREAM made a key without a TTL; every key the bus writes has one.
        if self._redis.pttl(self.queue_key) < 0:
            self._redis.pexpire(self.queue_key, self._task_ttl_ms)

    # -- signatures -------------------------------------------------------------------------

    def enforcing(self) -> bool:
        """Whether signature enforcement is on for this swarm now (the rollout flag)."""
        return self._flags.is_enabled(USE_SWARM_SIGNATURE_ENFORCEMENT, self._flag_context)

    def _keys(self, swarm: str, fresh: bool = False) -> Mapping[str, str]:
        return {name: public for name, (_, public) in self.registry(swarm, fresh).agents.items()}

    def check(self, envelope: Envelope, state: Mapping[str, Any] | None, swarm: str) -> None:
        """Verify ``envelope`` against ``swarm``'s registered keys and, when given, ``state``
        (what its last hop must have left). Refuse (``SignatureError``) or warn, as the
        rollout flag says."""
        problems = verify(envelope, self._keys(swarm))
        if any("no registered key" in problem for problem in problems):
            problems = verify(envelope, self._keys(swarm, fresh=True))
        if state is not None and envelope.chain_of_custody:
            left = dict(envelope.chain_of_custody[-1].detail)
            if left != dict(state):
                problems.append(
                    f"the stored state {dict(state)} is not what the last custody entry left "
                    f"({left}): changed outside the bus, or entries were removed"
                )
        if not problems:
            return
        recording = instruments()
        if self.enforcing():
            recording.swarm_signature_failures.add(1, _REFUSED)
            raise SignatureError(envelope.tracking_id, problems)
        recording.swarm_signature_failures.add(1, _WARNED)
        # One line a minute at most: with enforcement off, a swarm of unsigned agents would
        # otherwise log every message. The metric counts every one.
        self._unlogged += 1
        if time.monotonic() - self._logged_at >= WARNING_INTERVAL_SECONDS:
            logger.warning(
                "swarm %s: %d envelope(s) did not verify, accepted because %s is off; "
                "the latest, %s: %s",
                self.swarm,
                self._unlogged,
                USE_SWARM_SIGNATURE_ENFORCEMENT,
                envelope.tracking_id,
                "; ".join(problems),
            )
            self._logged_at, self._unlogged = time.monotonic(), 0

    def _hop(
        self, envelope: Envelope, action: SpeechAct, at: str, detail: Mapping[str, Any]
    ) -> CustodyEntry:
        return envelope.hop(self.agent, action, at, detail, self._key)

    # -- the registry and access control ------------------------------------------------------

    def registry(self, swarm: str | None = None, fresh: bool = False) -> Registry:
        """``swarm``'s registry (default: this bus's), read at most every few seconds."""
        swarm = self.swarm if swarm is None else check_name("swarm", swarm)
        cached = self._registries.get(swarm)
        if (
            cached is not None
            and not fresh
            and time.monotonic() - cached[0] < REGISTRY_CACHE_SECONDS
        ):
            return cached[1]
        with self._errors():
            fields = self._redis.hgetall(f"{self.prefix}swarm:registry:{swarm}")
        agents: dict[str, tuple[str, str]] = {}
        readers, artifacts = set(), {}
        for field, value in fields.items():
            kind, _, name = field.partition(":")
            if kind == "agent":
                try:
                    entry = json.loads(value)
                    agents[name] = (str(entry["role"]), str(entry["public_key"]))
                except (ValueError, KeyError, TypeError):
                    raise SwarmError(
                        f"swarm {swarm}'s registry is malformed at {field!r} (changed outside "
                        "the bus): memctl swarm scan shows it, keys add rewrites it"
                    ) from None
            elif kind == "reader":
                readers.add(name)
            elif kind == "artifact":
                artifacts[name] = value
        registry = Registry(swarm, agents, frozenset(readers), artifacts)
        self._registries[swarm] = (time.monotonic(), registry)
        return registry

    def _write_registry(self, mapping: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        key = f"{self.prefix}swarm:registry:{self.swarm}"
        with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            if mapping:
                pipe.hset(key, mapping={**mapping, "updated_at": _now()})
            if remove:
                pipe.hdel(key, *remove)
            pipe.hset(key, "updated_at", _now())
            pipe.pexpire(key, _ms(REGISTRY_TTL))
            pipe.execute()
        self._registries.pop(self.swarm, None)

    def register_agent(self, agent: str, public_key: str, role: str = "worker") -> None:
        """Register ``agent``'s Ed25519 public key (base64 raw, ``AgentKey.public_key``) and
        role in this swarm's registry; entries it signs verify from now on."""
        check_name("agent", agent)
        check_name("role", role)
        load_public_key(public_key)
        self._write_registry(
            {f"agent:{agent}": json.dumps({"role": role, "public_key": public_key})}
        )

    def unregister_agent(self, agent: str) -> None:
        """Remove ``agent`` from the roster: entries it signed stop verifying."""
        self._write_registry({}, [f"agent:{check_name('agent', agent)}"])

    def allow_reader(self, swarm: str) -> None:
        """Let agents of ``swarm`` read this swarm's tasks, findings and context."""
        self._write_registry({f"reader:{check_name('swarm', swarm)}": "1"})

    def disallow_reader(self, swarm: str) -> None:
        """Withdraw :meth:`allow_reader`."""
        self._write_registry({}, [f"reader:{check_name('swarm', swarm)}"])

    def add_artifact(self, name: str, uri: str) -> None:
        """Record an artifact of the swarm (a report, a dataset) by URI."""
        self._write_registry(
            {f"artifact:{check_name('artifact', name)}": check_citations([uri])[0]}
        )

    def _readable(self, swarm: str) -> None:
        if swarm != self.swarm and self.swarm not in self.registry(swarm).readers:
            raise PermissionDeniedError(
                f"swarm {self.swarm!r} may not read swarm {swarm!r}: its registry does not "
                f"allow it (memctl swarm allow {self.swarm}, run for {swarm!r})"
            )

    def _writable(self, swarm: str) -> None:
        if swarm != self.swarm:
            raise PermissionDeniedError(
                f"swarm {self.swarm!r} may not change swarm {swarm!r}'s tasks"
            )

    # -- tasks ------------------------------------------------------------------------------

    def _task_key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def create_task(self, description: str, data: Any = None, type: str = "task") -> Task:
        """Queue a new task (PENDING) and return it."""
        content: dict[str, Any] = {
            "swarm": self.swarm,
            "description": check_text("description", description),
            "data": json_value("data", data),
            "type": check_name("type", type),
        }
        at = _now()
        envelope = Envelope.new(self.agent, SpeechAct.REQUEST, content, at)
        envelope = envelope.with_entry(
            self._hop(envelope, SpeechAct.REQUEST, at, _task_state("PENDING", "", None))
        )
        task_id = uuid.uuid4().hex
        fields = {
            "swarm": self.swarm,
            "description": content["description"],
            "data": json.dumps(content["data"]),
            "type": content["type"],
            "status": TaskStatus.PENDING.value,
            "assignee": "",
            "created_at": at,
            "updated_at": at,
            "token": "0",
            "lease_until": "0",
            "completions": "0",
            **_envelope_fields(envelope),
        }
        pairs = [part for item in fields.items() for part in item]
        with self._errors():
            entry = self._create(
                keys=[self._task_key(task_id), self.queue_key],
                args=[task_id, self._task_ttl_ms, self._task_ttl_ms, GROUP, *pairs],
            )
        if not entry:
            raise SwarmError(f"task {task_id} exists already")
        instruments().swarm_tasks.add(1, _STATUS[TaskStatus.PENDING])
        return self._task(task_id, {**fields, "entry": entry})

    def _task(self, task_id: str, fields: Mapping[str, str]) -> Task:
        envelope = _envelope_from(fields)
        result = json.loads(fields["result"]) if fields.get("result") else None
        return Task(
            id=task_id,
            swarm=fields["swarm"],
            description=fields["description"],
            data=json.loads(fields["data"]),
            type=fields["type"],
            status=TaskStatus(fields["status"]),
            assignee=fields.get("assignee") or None,
            created_at=fields["created_at"],
            updated_at=fields["updated_at"],
            result=result,
            claims=int(fields.get("token", "0")),
            envelope=envelope,
        )

    def _parse(
        self, parse: Callable[[str, Mapping[str, str]], R], key: str, fields: Mapping[str, str]
    ) -> R:
        """A record from its hash fields; a malformed one (changed outside the bus) is refused
        like a bad signature while enforcement is on, and an error either way."""
        try:
            return parse(key.rsplit(":", 1)[-1], fields)
        except (KeyError, ValueError, TypeError, InvalidInputError) as error:
            problem = f"{key} is malformed ({error!r})"
            if self.enforcing():
                instruments().swarm_signature_failures.add(1, _REFUSED)
                raise SignatureError(fields.get("tracking_id", "?"), [problem]) from None
            raise SwarmError(problem) from None

    def _verified_task(self, task_id: str, fields: Mapping[str, str]) -> Task:
        task = self._parse(self._task, self._task_key(task_id), fields)
        self.check(
            task.envelope,
            _task_state(task.status.value, task.assignee or "", task.result),
            task.swarm,
        )
        return task

    def check_task_status(self, task_id: str) -> Task:
        """The task, verified; ``NotFoundError`` if it does not exist (or expired)."""
        check_name("task id", task_id)
        with self._errors():
            fields = self._redis.hgetall(self._task_key(task_id))
        if not fields:
            raise NotFoundError(f"task {task_id}: no such task (or it expired)")
        self._readable(fields.get("swarm", ""))
        return self._verified_task(task_id, fields)

    def get_unassigned_task(self, block: timedelta | None = None) -> Claim | None:
        """Claim the next task of this swarm's queue: one whose worker's lease expired
        first, else the oldest not yet delivered. None when there is none (after waiting up
        to ``block`` for one). A task whose envelope is refused (``SignatureError``) is
        taken out of the queue, so the next call goes on with the others."""
        deadline = time.monotonic() + (block.total_seconds() if block else 0.0)
        while True:
            found = self._queue_script(
                self._next, [self.queue_key], [GROUP, self.agent, self._lease_ms + 5, self.prefix]
            )
            if found:
                entry, task_id, flat = found
                try:
                    claim = self._claim_fields(
                        task_id, dict(zip(flat[::2], flat[1::2], strict=True))
                    )
                except SignatureError:
                    # Refused: out of the queue, or every worker would meet it again after
                    # each lease. The task itself stays for `memctl swarm task show`.
                    with self._errors(), self._redis.pipeline(transaction=True) as pipe:
                        pipe.xack(self.queue_key, GROUP, entry)
                        pipe.xdel(self.queue_key, entry)
                        pipe.execute()
                    raise
                if claim is not None:
                    return claim
                continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def claim_task(self, task_id: str) -> Claim | None:
        """Claim ``task_id``: exactly one caller wins a PENDING task (or one whose lease
        expired); None for everyone else. The winner holds a lease (``heartbeat`` to keep it)."""
        check_name("task id", task_id)
        with self._errors():
            fields = self._redis.hgetall(self._task_key(task_id))
        if not fields:
            raise NotFoundError(f"task {task_id}: no such task (or it expired)")
        self._writable(fields.get("swarm", ""))
        return self._claim_fields(task_id, fields)

    def _claim_fields(self, task_id: str, fields: Mapping[str, str]) -> Claim | None:
        for _ in range(3):
            task = self._verified_task(task_id, fields)
            if task.swarm != self.swarm:
                raise PermissionDeniedError(f"task {task_id} belongs to swarm {task.swarm!r}")
            if task.status not in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                return None
            at = _now()
            entry = self._hop(
                task.envelope, SpeechAct.AGREE, at, _task_state("IN_PROGRESS", self.agent, None)
            )
            answer = self._queue_script(
                self._claim,
                [self._task_key(task_id), self.queue_key],
                [
                    GROUP,
                    self.agent,
                    self._lease_ms,
                    canonical(entry.as_dict()).decode(),
                    str(len(task.envelope.chain_of_custody)),
                    at,
                ],
            )
            if answer[0] == "ok":
                recording = instruments()
                recording.swarm_claims.add(1)
                recording.swarm_tasks.add(1, _STATUS[TaskStatus.IN_PROGRESS])
                reclaimed = bool(int(answer[2]))
                if reclaimed:
                    recording.swarm_lease_expiries.add(1)
                claimed = dataclasses.replace(
                    task,
                    status=TaskStatus.IN_PROGRESS,
                    assignee=self.agent,
                    updated_at=at,
                    claims=int(answer[1]),
                    envelope=task.envelope.with_entry(entry),
                )
                return Claim(claimed, int(answer[1]), reclaimed)
            if answer[0] != "stale":
                return None
            with self._errors():  # someone moved the task on meanwhile: look again
                fields = self._redis.hgetall(self._task_key(task_id))
            if not fields:
                return None
        return None

    def heartbeat(self, claim: Claim) -> None:
        """Extend the lease by a full lease from now; ``LeaseLostError`` if it is gone."""
        kept = self._queue_script(
            self._heartbeat,
            [self._task_key(claim.task.id), self.queue_key],
            [GROUP, self.agent, claim.token, self._lease_ms],
        )
        if not kept:
            raise LeaseLostError(f"task {claim.task.id}: the lease is no longer {self.agent!r}'s")

    def complete_task(self, claim: Claim, result: Any = None) -> Claim:
        """Mark the claimed task COMPLETED with ``result`` (JSON data); exactly once: a claim
        whose lease was taken raises ``LeaseLostError`` and changes nothing."""
        return self._finish_task(claim, TaskStatus.COMPLETED, SpeechAct.CONFIRM, result)

    def fail_task(self, claim: Claim, reason: str) -> Claim:
        """Mark the claimed task FAILED, with ``reason`` as its result."""
        return self._finish_task(
            claim, TaskStatus.FAILED, SpeechAct.FAILURE, {"reason": check_text("reason", reason)}
        )

    def release_task(self, claim: Claim) -> Claim:
        """Give the claimed (or held) task back: PENDING, queued again for anyone."""
        return self._finish_task(claim, TaskStatus.PENDING, SpeechAct.REFUSE, None)

    def hold_task(self, claim: Claim, status: TaskStatus | str) -> Claim:
        """Park the claimed task as NEEDS_ASSIST or BLOCKED, out of the queue; the holder
        completes, fails or releases it later."""
        if status not in (TaskStatus.NEEDS_ASSIST, TaskStatus.BLOCKED):
            raise InvalidInputError(
                f"status: a task is held as NEEDS_ASSIST or BLOCKED, not {status!r}"
            )
        return self._finish_task(claim, TaskStatus(status), SpeechAct.HOLD, None)

    def _finish_task(
        self, claim: Claim, status: TaskStatus, action: SpeechAct, result: Any
    ) -> Claim:
        if not isinstance(claim, Claim):
            raise InvalidInputError(f"claim: must be a Claim, not {type(claim).__name__}")
        result = json_value("result", result)
        task = claim.task
        at = _now()
        assignee = "" if status is TaskStatus.PENDING else self.agent
        entry = self._hop(task.envelope, action, at, _task_state(status.value, assignee, result))
        with self._errors():
            answer = self._finish(
                keys=[self._task_key(task.id), self.queue_key],
                args=[
                    GROUP,
                    self.agent,
                    claim.token,
                    str(len(task.envelope.chain_of_custody)),
                    canonical(entry.as_dict()).decode(),
                    status.value,
                    "" if result is None else json.dumps(result),
                    at,
                    "1" if status is TaskStatus.PENDING else "0",
                    task.id,
                    self._task_ttl_ms,
                    self._task_ttl_ms,
                ],
            )
        if answer[0] == "lost":
            raise LeaseLostError(
                f"task {task.id}: the lease is no longer {self.agent!r}'s (status "
                f"{answer[1] or 'gone'}, assignee {answer[2] or 'none'})"
            )
        if answer[0] == "stale":
            raise LeaseLostError(f"task {task.id}: its chain of custody changed under this claim")
        instruments().swarm_tasks.add(1, _STATUS[status])
        done = dataclasses.replace(
            task,
            status=status,
            assignee=assignee or None,
            updated_at=at,
            result=result if result is not None else task.result,
            envelope=task.envelope.with_entry(entry),
        )
        return dataclasses.replace(claim, task=done)

    def custody(self, task_id: str) -> list[CustodyEntry]:
        """Who did what to the task, in order, from its verified chain of custody."""
        return list(self.check_task_status(task_id).envelope.chain_of_custody)

    # -- findings, conflicts, escalations ------------------------------------------------------

    def post_finding(
        self,
        task_id: str,
        claim: str,
        confidence: float,
        citations: Sequence[str] = (),
        *,
        speech_act: SpeechAct | str = SpeechAct.INFORM,
        contradicts: Sequence[str] = (),
    ) -> Finding:
        """Post a finding on one of this swarm's tasks. Invalid input (a confidence outside
        [0, 1] or NaN, a citation that is not a URI, an unknown speech act) raises
        ``InvalidInputError`` before anything is written. Below 0.2 confidence it is
        escalated to a human at once; at or above ``remember.min_confidence`` it becomes a
        memory."""
        check_name("task id", task_id)
        content: dict[str, Any] = {
            "swarm": self.swarm,
            "task": task_id,
            "claim": check_text("claim", claim),
            "confidence": check_confidence(confidence),
            "citations": check_citations(citations),
            "contradicts": [
                check_name("contradicts", other)
                for other in _as_sequence("contradicts", contradicts)
            ],
        }
        act = SpeechAct.parse(speech_act)
        at = _now()
        envelope = Envelope.new(self.agent, act, content, at)
        envelope = envelope.with_entry(self._hop(envelope, act, at, {"posted": True}))
        finding_id = uuid.uuid4().hex
        fields: dict[str, str] = {
            "swarm": self.swarm,
            "task": task_id,
            "claim": content["claim"],
            "confidence": repr(content["confidence"]),
            "citations": json.dumps(content["citations"]),
            "contradicts": json.dumps(content["contradicts"]),
            "worker": self.agent,
            "at": at,
            **_envelope_fields(envelope),
        }
        self._write_under_task(
            f"{self.prefix}finding:{finding_id}",
            f"{self.prefix}task:{task_id}:findings",
            task_id,
            finding_id,
            fields,
            FINDING_TTL,
        )
        instruments().swarm_findings.add(1)
        finding = _finding(finding_id, fields)
        if finding.confidence < LOW_CONFIDENCE:
            self._escalate(
                task_id,
                f"confidence {finding.confidence} is below {LOW_CONFIDENCE}: {finding.claim}",
                [finding_id],
                "automatic",
            )
        remember = self._remember
        if remember is not None and finding.confidence >= remember.min_confidence:
            remember.memory.scope(remember.user, remember.agent).add(
                finding.claim,
                tier="semantic",
                importance=finding.confidence,
                metadata={
                    "source": "swarm",
                    "swarm": self.swarm,
                    "task": task_id,
                    "finding": finding_id,
                    "tracking_id": envelope.tracking_id,
                    "confidence": finding.confidence,
                    "citations": list(finding.citations),
                },
            )
        return finding

    def _write_under_task(
        self,
        key: str,
        index: str,
        task_id: str,
        record_id: str,
        fields: Mapping[str, str],
        ttl: timedelta,
    ) -> None:
        pairs = [part for item in fields.items() for part in item]
        with self._errors():
            answer = self._under_task(
                keys=[key, index, self._task_key(task_id)],
                args=[self.swarm, _ms(ttl), time.time_ns() // 1000, record_id, *pairs],
            )
        if answer == "no_task":
            raise NotFoundError(f"task {task_id}: no such task (or it expired)")
        if answer == "other_swarm":
            raise PermissionDeniedError(f"task {task_id} belongs to another swarm")

    def findings(self, task_id: str) -> list[Finding]:
        """The task's findings, oldest first, each verified."""
        task = self.check_task_status(task_id)
        with self._errors():
            ids = self._redis.zrange(
                f"{self.prefix}task:{task_id}:findings", 0, MAX_FINDINGS_COMPARED - 1
            )
            with self._redis.pipeline(transaction=False) as pipe:
                for finding_id in ids:
                    pipe.hgetall(f"{self.prefix}finding:{finding_id}")
                rows = pipe.execute()
        found = []
        for finding_id, fields in zip(ids, rows, strict=True):
            if not fields:
                continue  # expired since the index was read
            finding = self._parse(_finding, f"{self.prefix}finding:{finding_id}", fields)
            self.check(finding.envelope, {"posted": True}, task.swarm)
            found.append(finding)
        return found

    def detect_finding_conflicts(self, task_id: str, threshold: float) -> list[Conflict]:
        """Pairs of the task's findings on the same claim (compared case- and
        space-insensitively) whose confidences differ by more than ``threshold``, and pairs
        where one finding declares it contradicts the other."""
        threshold = check_confidence(threshold)
        findings = self.findings(task_id)
        by_id = {finding.id: finding for finding in findings}
        conflicts: list[Conflict] = []
        seen: set[frozenset[str]] = set()
        for finding in findings:
            for other_id in finding.contradicts:
                other = by_id.get(other_id)
                pair = frozenset((finding.id, other_id))
                if other is not None and pair not in seen:
                    seen.add(pair)
                    conflicts.append(Conflict(other, finding, "contradicts"))
        groups: dict[str, list[Finding]] = {}
        for finding in findings:
            groups.setdefault(" ".join(finding.claim.casefold().split()), []).append(finding)
        for group in groups.values():
            for index, first in enumerate(group):
                for second in group[index + 1 :]:
                    pair = frozenset((first.id, second.id))
                    if pair not in seen and abs(first.confidence - second.confidence) > threshold:
                        seen.add(pair)
                        conflicts.append(Conflict(first, second, "confidence"))
        if conflicts:
            instruments().swarm_conflicts.add(len(conflicts))
        return conflicts

    def escalate_to_human(
        self, task_id: str, reason: str, findings: Sequence[str] = ()
    ) -> Escalation:
        """Ask a person about ``task_id``: an open escalation they list and resolve with
        ``memctl swarm escalations``."""
        return self._escalate(task_id, reason, findings, "manual")

    def _escalate(
        self, task_id: str, reason: str, findings: Sequence[str], cause: str
    ) -> Escalation:
        check_name("task id", task_id)
        content: dict[str, Any] = {
            "swarm": self.swarm,
            "task": task_id,
            "reason": check_text("reason", reason),
            "findings": [check_name("finding id", f) for f in _as_sequence("findings", findings)],
            "cause": cause,
        }
        at = _now()
        envelope = Envelope.new(self.agent, SpeechAct.ESCALATE, content, at)
        envelope = envelope.with_entry(
            self._hop(envelope, SpeechAct.ESCALATE, at, {"status": "open"})
        )
        escalation_id = uuid.uuid4().hex
        fields: dict[str, str] = {
            "swarm": self.swarm,
            "task": task_id,
            "reason": content["reason"],
            "findings": json.dumps(content["findings"]),
            "cause": cause,
            "status": "open",
            "raised_by": self.agent,
            "created_at": at,
            **_envelope_fields(envelope),
        }
        self._write_under_task(
            f"{self.prefix}swarm:escalation:{escalation_id}",
            f"{self.prefix}swarm:escalations:{self.swarm}",
            task_id,
            escalation_id,
            fields,
            ESCALATION_TTL,
        )
        instruments().swarm_escalations.add(1, _CAUSE[cause])
        return _escalation(escalation_id, fields)

    def escalations(self, include_resolved: bool = False) -> list[Escalation]:
        """This swarm's escalations, oldest first: the open ones, or all that have not
        expired (7 days)."""
        with self._errors():
            if include_resolved:
                keys = sorted(
                    self._redis.scan_iter(match=f"{self.prefix}swarm:escalation:*", count=1000)
                )
                ids = [key.rsplit(":", 1)[1] for key in keys]
            else:
                ids = self._redis.zrange(f"{self.prefix}swarm:escalations:{self.swarm}", 0, -1)
            with self._redis.pipeline(transaction=False) as pipe:
                for escalation_id in ids:
                    pipe.hgetall(f"{self.prefix}swarm:escalation:{escalation_id}")
                rows = pipe.execute()
        found = []
        for escalation_id, fields in zip(ids, rows, strict=True):
            if fields and fields.get("swarm") == self.swarm:
                key = f"{self.prefix}swarm:escalation:{escalation_id}"
                escalation = self._parse(_escalation, key, fields)
                self.check(escalation.envelope, _escalation_state(escalation), self.swarm)
                found.append(escalation)
        return sorted(found, key=lambda e: e.created_at)

    def resolve_escalation(self, escalation_id: str, resolution: str) -> Escalation:
        """Resolve an open escalation of this swarm, as this agent, with ``resolution``."""
        check_name("escalation id", escalation_id)
        resolution = check_text("resolution", resolution)
        key = f"{self.prefix}swarm:escalation:{escalation_id}"
        with self._errors():
            fields = self._redis.hgetall(key)
        if not fields:
            raise NotFoundError(f"escalation {escalation_id}: no such escalation (or it expired)")
        self._writable(fields.get("swarm", ""))
        escalation = self._parse(_escalation, key, fields)
        self.check(escalation.envelope, _escalation_state(escalation), self.swarm)
        at = _now()
        entry = self._hop(
            escalation.envelope,
            SpeechAct.CONFIRM,
            at,
            {"status": "resolved", "resolution": _digest(resolution)},
        )
        with self._errors():
            answer = self._resolve(
                keys=[key, f"{self.prefix}swarm:escalations:{self.swarm}"],
                args=[
                    str(len(escalation.envelope.chain_of_custody)),
                    canonical(entry.as_dict()).decode(),
                    self.agent,
                    resolution,
                    at,
                    escalation_id,
                ],
            )
        if answer != "ok":
            raise SwarmError(f"escalation {escalation_id}: not open any more ({answer})")
        with self._errors():
            return _escalation(escalation_id, self._redis.hgetall(key))

    # -- context, session summaries ----------------------------------------------------------

    def put_context(
        self,
        name: str,
        *,
        notes: Sequence[Any] | None = None,
        timeline: Sequence[Any] | None = None,
        topics: Sequence[Any] | None = None,
        shared: Mapping[str, Any] | None = None,
    ) -> Context:
        """Set the given parts of this swarm's context ``name`` (the others are kept)."""
        key = f"{self.prefix}context:{self.swarm}:{check_name('context name', name)}"
        parts = {"notes": notes, "timeline": timeline, "topics": topics}
        fields = {
            part: json.dumps(json_value(part, list(_as_sequence(part, value))))
            for part, value in parts.items()
            if value is not None
        }
        if shared is not None:
            if not isinstance(shared, Mapping):
                raise InvalidInputError(f"shared: must be an object, not {type(shared).__name__}")
            fields["shared"] = json.dumps(json_value("shared", dict(shared)))
        defaults = {"notes": "[]", "timeline": "[]", "topics": "[]", "shared": "{}"}
        with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            for part, empty in defaults.items():
                pipe.hsetnx(key, part, empty)
            pipe.hset(key, mapping={**fields, "updated_at": _now()})
            pipe.pexpire(key, _ms(CONTEXT_TTL))
            pipe.execute()
        return self.get_context(name)

    def get_context(self, name: str, scope: str | None = None) -> Context:
        """Context ``name`` of swarm ``scope`` (default: this one; others if they allow it)."""
        scope = self.swarm if scope is None else check_name("scope", scope)
        self._readable(scope)
        key = f"{self.prefix}context:{scope}:{check_name('context name', name)}"
        with self._errors():
            fields = self._redis.hgetall(key)
        if not fields:
            raise NotFoundError(f"context {scope}:{name}: no such context (or it expired)")
        try:
            return Context(
                scope,
                name,
                json.loads(fields["notes"]),
                json.loads(fields["timeline"]),
                json.loads(fields["topics"]),
                json.loads(fields["shared"]),
                fields.get("updated_at", ""),
            )
        except (KeyError, ValueError):
            raise SwarmError(f"{key} is malformed (changed outside the bus)") from None

    def record_session_summary(
        self, label: str, metrics: Mapping[str, float], day: date | None = None
    ) -> str:
        """Record a session's metrics (name -> finite number) for 30 days; returns the key."""
        if not isinstance(metrics, Mapping) or not metrics:
            raise InvalidInputError("metrics: must be a non-empty object of name -> number")
        for metric, value in metrics.items():
            check_name("metric name", metric)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidInputError(
                    f"metrics[{metric!r}]: must be a finite number, not {value!r}"
                )
        if day is not None and not isinstance(day, date):
            raise InvalidInputError(f"day: must be a date, not {type(day).__name__}")
        day = day or datetime.now(UTC).date()
        key = f"{self.prefix}session:infrafabric:{day.isoformat()}:{check_name('label', label)}"
        with self._errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "metrics": json.dumps(dict(metrics)),
                    "swarm": self.swarm,
                    "recorded_by": self.agent,
                    "recorded_at": _now(),
                },
            )
            pipe.pexpire(key, _ms(SESSION_TTL))
            pipe.execute()
        return key

    # -- remediation -------------------------------------------------------------------------

    def scan(self, *, clean: bool = False, scan_type: str = "full") -> ScanReport:
        """Walk every key of the bus (under its prefix, all swarms): wrong types, keys
        without a TTL, schema violations; ``clean`` fixes them. See :mod:`memory.swarm.scan`."""
        with self._errors():
            return scan(self._redis, self.prefix, clean=clean, scan_type=scan_type)

    # -- health ------------------------------------------------------------------------------

    def health_check(self) -> SwarmHealth:
        """Ping Redis and report on the bus: version, round trip, AOF, queue, escalations,
        registered agents. Unreachable Redis raises ``SwarmUnavailableError``."""
        problems = []
        with self._errors():
            started = time.perf_counter()
            self._redis.ping()
            round_trip = (time.perf_counter() - started) * 1000
            version = str(self._redis.info("server").get("redis_version", "0"))
            aof = bool(int(self._redis.info("persistence").get("aof_enabled", 0)))
            length = int(self._redis.xlen(self.queue_key))
            try:
                pending = int(self._redis.xpending(self.queue_key, GROUP)["pending"])
            except redis.exceptions.ResponseError:
                pending = 0  # no worker has asked for work yet: no consumer group

            escalations = int(self._redis.zcard(f"{self.prefix}swarm:escalations:{self.swarm}"))
        agents = len(self.registry(fresh=True).agents)
        if _too_old(version):
            problems.append(f"Redis {version} is older than 6.2")
        if not aof:
            problems.append("AOF is off: acknowledged writes are lost if Redis restarts")
        if self._key is None:
            problems.append(f"agent {self.agent!r} has no signing key")
        elif self.registry().agents.get(self.agent, ("", ""))[1] != self._key.public_key:
            problems.append(f"agent {self.agent!r}'s key is not registered in swarm {self.swarm!r}")
        return SwarmHealth(
            version,
            round(round_trip, 3),
            aof,
            length,
            pending,
            escalations,
            agents,
            tuple(problems),
        )


_REFUSED = {"outcome": "refused"}
_WARNED = {"outcome": "warned"}
_CAUSE = {cause: {"cause": cause} for cause in ("automatic", "manual")}
_STATUS = {status: {"status": status.value} for status in TaskStatus}


def _as_sequence(what: str, value: Any) -> Sequence[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what}: must be a list, not {type(value).__name__}")
    return value


def _envelope_fields(envelope: Envelope) -> dict[str, str]:
    fields = {
        "tracking_id": envelope.tracking_id,
        "origin": envelope.origin,
        "dispatched_at": envelope.dispatched_at,
        "speech_act": envelope.speech_act.value,
        "custody_n": str(len(envelope.chain_of_custody)),
    }
    for index, entry in enumerate(envelope.chain_of_custody):
        fields[f"custody:{index}"] = canonical(entry.as_dict()).decode()
    return fields


# The content each kind of record's envelope carries, rebuilt from its hash fields.
def _content(fields: Mapping[str, str]) -> dict[str, Any]:
    if "description" in fields:
        return {
            "swarm": fields["swarm"],
            "description": fields["description"],
            "data": json.loads(fields["data"]),
            "type": fields["type"],
        }
    if "claim" in fields:
        return {
            "swarm": fields["swarm"],
            "task": fields["task"],
            "claim": fields["claim"],
            "confidence": float(fields["confidence"]),
            "citations": json.loads(fields["citations"]),
            "contradicts": json.loads(fields["contradicts"]),
        }
    return {
        "swarm": fields["swarm"],
        "task": fields["task"],
        "reason": fields["reason"],
        "findings": json.loads(fields["findings"]),
        "cause": fields["cause"],
    }


def _envelope_from(fields: Mapping[str, str]) -> Envelope:
    count = int(fields.get("custody_n", "0"))
    chain = []
    for index in range(count):
        text = fields.get(f"custody:{index}")
        if text is not None:  # a missing entry breaks the chain, which verification reports
            chain.append(json.loads(text))
    return Envelope.from_dict(
        {
            "tracking_id": fields.get("tracking_id"),
            "origin": fields.get("origin"),
            "dispatched_at": fields.get("dispatched_at"),
            "speech_act": fields.get("speech_act"),
            "content": _content(fields),
            "chain_of_custody": chain,
        }
    )


def _finding(finding_id: str, fields: Mapping[str, str]) -> Finding:
    envelope = _envelope_from(fields)
    return Finding(
        id=finding_id,
        swarm=fields["swarm"],
        task=fields["task"],
        claim=fields["claim"],
        confidence=float(fields["confidence"]),
        citations=tuple(json.loads(fields["citations"])),
        speech_act=envelope.speech_act,
        worker=fields["worker"],
        at=fields["at"],
        contradicts=tuple(json.loads(fields["contradicts"])),
        envelope=envelope,
    )


def _escalation_state(escalation: Escalation) -> dict[str, Any]:
    if escalation.status == "open":
        return {"status": "open"}
    return {"status": escalation.status, "resolution": _digest(escalation.resolution)}


def _escalation(escalation_id: str, fields: Mapping[str, str]) -> Escalation:
    return Escalation(
        id=escalation_id,
        swarm=fields["swarm"],
        task=fields["task"],
        reason=fields["reason"],
        findings=tuple(json.loads(fields["findings"])),
        cause=fields["cause"],
        status=fields["status"],
        raised_by=fields["raised_by"],
        created_at=fields["created_at"],
        resolved_by=fields.get("resolved_by"),
        resolution=fields.get("resolution"),
        envelope=_envelope_from(fields),
    )
