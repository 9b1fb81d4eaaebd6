"""Hub service throughput: requests per second and latency of ``memctl serve`` under wrk
(HTTP) and a gRPC load generator.

For each backend (a SQLite file, a throwaway PostgreSQL database) the script seeds one
user with memories, starts one ``memctl serve`` replica (hashing embedder) on a free
loopback port, and drives ``get``, ``add``, ``list``, ``search`` and ``inject`` with
``wrk`` (Debian package; 2 threads, on this same machine) at 16 and 64 connections for
``--seconds`` each. ``add`` writes a new memory per request. wrk's Lua ``done`` hook
reports p50/p95/p99 from its latency histogram. The replica's CPU time over each run
(``/proc``) says how much of a core the server used per request.

gRPC (``--grpc-operations``, default ``get`` and ``add``): ``--grpc-clients`` processes
(default 2; ``ghz`` is not packaged here), each with one channel and its share of the
concurrent streams as asyncio tasks calling the unary RPC back to back for ``--seconds``
(bounded: a fixed time, one call in flight per stream); every call's latency is kept and
p50/p95/p99 computed over all of them (``measure.summary``).

The baseline, measured in the same run: the embedded call (``Scope.get``, ``add``, …) in
this process on the same database, p50/p95 over ``--calls`` calls each. What the service
adds is HTTP, JSON both ways, authentication (a memoised scrypt check and a key read) and
the thread hand-off.

Run (from the repository root; ``apt-get install wrk`` first)::

    .venv/bin/python benchmarks/service_throughput.py
    .venv/bin/python benchmarks/service_throughput.py --backends sqlite --seconds 10
    .venv/bin/python benchmarks/service_throughput.py --transports grpc

Prints a table and one JSON line per backend (``grep '^{'``). Target from the checklist:
at least 1,000 requests/s with p95 ≤ 20 ms for get and for add. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, summary, table

# The test suite's helper that starts `memctl serve` on a free loopback port and stops it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import HashingEmbedder, Memory  # noqa: E402
from memory import ops as ops  # noqa: E402
from memory.wire import memory_pb2, method_name, to_message  # noqa: E402
from tests.service.processes import served  # noqa: E402

OPERATIONS = ("get", "add", "list", "search", "inject")
TARGET_RPS = 1000.0
TARGET_P95_MS = 20.0
SEEDED = 1000

WRK_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
function request()
  counter = counter + 1
  local body = string.gsub(BODY, "{n}", tid .. "-" .. counter)
  return wrk.format("POST", PATH, HEADERS, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def bodies(memory_id: int) -> dict[str, dict[str, Any]]:
    """The request body of each operation ({n}: unique per request, for add)."""
    return {
        "get": {"arguments": {"memory_id": memory_id}},
        "add": {"arguments": {"content": "benchmark memory {n}"}},
        "list": {"arguments": {"limit": 20}},
        "search": {"arguments": {"query": "invoices export friday", "limit": 10}},
        "inject": {"arguments": {"query": "what about the invoices", "budget_tokens": 256}},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, secret: str, operation: str, body: dict[str, Any], connections: int,
          seconds: int, scratch: Path, pid: int) -> dict[str, Any]:
    script = scratch / f"{operation}.lua"
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    lua_headers = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    script.write_text(
        f"PATH = {json.dumps('/v1/' + operation)}\n"
        f"HEADERS = {{{lua_headers}}}\n"
        f"BODY = {json.dumps(json.dumps(body))}\n" + WRK_SCRIPT
    )
    before = cpu_seconds(pid)
    run = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    cpu = cpu_seconds(pid) - before
    line = next(item for item in run.stdout.splitlines() if item.startswith("WRK "))
    figures = json.loads(line[4:])
    duration = figures["duration_us"] / 1e6
    return {
        "operation": operation,
        "connections": connections,
        "rps": round(figures["requests"] / duration, 1),
        "p50_ms": figures["p50_us"] / 1000,
        "p95_ms": figures["p95_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "non2xx": figures["non2xx"],
        "errors": figures["errors"],
        "server_cpu_ms_per_request": round(1000 * cpu / max(figures["requests"], 1), 3),
        "server_cores_used": round(cpu / duration, 2),
    }


def _grpc_client(address: str, secret: str, operation: str, body: dict[str, Any],
                 streams: int, seconds: int, client: int) -> dict[str, Any]:
    """One load process: ``streams`` calls in flight on one channel for ``seconds``; the
    latency of each call (ms) and the number that failed."""
    method = method_name(operation)
    request_type = getattr(memory_pb2, f"{method}Request")
    reply_type = getattr(memory_pb2, f"{method}Reply")
    metadata = (("authorization", f"Bearer {secret}"),)
    template = json.dumps(body)

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        failed = 0
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(
                f"/tiered_memory.v1.MemoryHub/{method}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=reply_type.FromString,
            )
            # One untimed call per stream first: the connection, and the server's first
            # check of the key (scrypt, memoised after), are not what is measured.
            await asyncio.gather(*(
                call(to_message(json.loads(template.replace("{n}", f"warm-{client}-{n}")),
                                request_type), metadata=metadata, timeout=30)
                for n in range(streams)
            ))
            deadline = time.perf_counter() + seconds

            async def stream(number: int) -> None:
                nonlocal failed
                sent = 0
                while time.perf_counter() < deadline:
                    sent += 1
                    unique = template.replace("{n}", f"{client}-{number}-{sent}")
                    request = to_message(json.loads(unique), request_type)
                    started = time.perf_counter()
                    try:
                        await call(request, metadata=metadata, timeout=10)
                    except grpc.RpcError:
                        failed += 1
                        continue
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(stream(number) for number in range(streams)))
            return {"latencies": latencies, "failed": failed,
                    "duration": time.perf_counter() - started}

    return asyncio.run(run())


def drive_grpc(address: str, secret: str, operation: str, body: dict[str, Any],
               concurrency: int, seconds: int, clients: int, pid: int) -> dict[str, Any]:
    """``concurrency`` streams spread over ``clients`` processes (the remainder to the
    first ones), as wrk's connections over its threads."""
    shares = [concurrency // clients + (1 if n < concurrency % clients else 0)
              for n in range(clients)]
    before = cpu_seconds(pid)
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        parts = pool.starmap(_grpc_client, [
            (address, secret, operation, body, share, seconds, n)
            for n, share in enumerate(shares) if share
        ])
    cpu = cpu_seconds(pid) - before
    latencies = [value for part in parts for value in part["latencies"]]
    duration = max(part["duration"] for part in parts)
    figures = summary(latencies, ("p50", "p95", "p99"))
    return {
        "operation": operation,
        "connections": concurrency,
        "rps": round(len(latencies) / duration, 1),
        **figures,
        "non2xx": sum(part["failed"] for part in parts),
        "errors": 0,
        "server_cpu_ms_per_request": round(1000 * cpu / max(len(latencies), 1), 3),
        "server_cores_used": round(cpu / duration, 2),
    }


def embedded(url: str, memory_id: int, calls: int) -> dict[str, dict[str, Any]]:
    """p50/p95 of each operation called in this process (the baseline)."""
    results: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        scope = memory.scope("ada", "bench")
        calls_of = {
            "get": lambda: scope.get(memory_id),
            "add": lambda: scope.add(f"embedded memory {uuid.uuid4().hex}"),
            "list": lambda: scope.list(limit=20),
            "search": lambda: scope.search("invoices export friday", limit=10),
            "inject": lambda: scope.inject("what about the invoices", 256),
        }
        for _ in range(calls):
            for name, call in calls_of.items():
                started = time.perf_counter()
                call()
                results[name].append((time.perf_counter() - started) * 1000)
    return {name: summary(values, ("p50", "p95")) for name, values in results.items()}


def seed(url: str) -> tuple[int, str]:
    ops.migrate(url)
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        scope = memory.scope("ada", "bench")
        added = scope.add_many(
            [f"Ada exports invoices on Friday, note {n}" for n in range(SEEDED)]
        )
    return added[0].id, ops.create_key(url, "bench", users=["ada"]).secret


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=int, default=5, help="per operation and level")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--calls", type=int, default=200, help="embedded baseline calls")
    parser.add_argument("--transports", default="http,grpc")
    parser.add_argument("--grpc-operations", default="get,add")
    parser.add_argument("--grpc-clients", type=int, default=2, help="load processes")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="an existing database, used only to CREATE and DROP a throwaway one")
    args = parser.parse_args()
    transports = args.transports.split(",")
    grpc_operations = args.grpc_operations.split(",")
    if "http" in transports and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    levels = [int(item) for item in args.connections.split(",")]
    print(f"service_throughput: seconds={args.seconds} connections={levels} "
          f"transports={transports} cpus={os.cpu_count()} loadavg={load_average()}")
    rows, verdicts = [], []
    for backend in args.backends.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="service-throughput-") as directory,
            scratch_database(backend, args.postgres_url, "servicebench") as url,
        ):
            scratch = Path(directory)
            memory_id, secret = seed(url)
            baseline = embedded(url, memory_id, args.calls)
            runs = []
            environment = {"MEMORY_SERVICE_LOG_LEVEL": "warning",
                           # the benchmark measures throughput, not the bulkhead's refusals
                           "MEMORY_SERVICE_QUEUE_LIMIT": "10000"}
            with served(url, scratch / "serve.log", **environment) as server:
                pid = server.process.pid
                for operation, body in bodies(memory_id).items():
                    for connections in levels:
                        if "http" in transports:
                            run = drive(server.url, secret, operation, body, connections,
                                        args.seconds, scratch, pid)
                            runs.append({"transport": "http", **run})
                        if "grpc" in transports and operation in grpc_operations:
                            address = server.grpc_url.removeprefix("grpc://")
                            run = drive_grpc(address, secret, operation, body, connections,
                                             args.seconds, args.grpc_clients, pid)
                            runs.append({"transport": "grpc", **run})
            for run in runs:
                base = baseline[run["operation"]]
                target = ""
                if run["operation"] in ("get", "add"):
                    ok = (run["rps"] >= TARGET_RPS and run["p95_ms"] <= TARGET_P95_MS
                          and run["non2xx"] == 0 and run["errors"] == 0)
                    target = "PASS" if ok else "FAIL"
                    verdicts.append(ok)
                rows.append([backend, run["transport"], run["operation"], run["connections"],
                             run["rps"],
                             run["p50_ms"], run["p95_ms"], run["p99_ms"],
                             run["non2xx"] + run["errors"], run["server_cpu_ms_per_request"],
                             base["p50_ms"], base["p95_ms"], target])
            emit({"benchmark": "service_throughput", "backend": backend,
                  "seconds": args.seconds, "runs": runs, "embedded": baseline})
    print("\n" + table(
        ["backend", "transport", "op", "conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed",
         "cpu ms/req", "embedded p50", "embedded p95",
         f">= {TARGET_RPS:g}/s, p95 <= {TARGET_P95_MS:g} ms"],
        rows, digits=2, labels=3,
    ))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
