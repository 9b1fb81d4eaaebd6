"""``memctl swarm`` against the real Redis: what an operator types, and the errors they see
(one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from memory.cli import main
from memory.swarm import AgentKey, SwarmBus
from tests.swarm.conftest import REDIS_URL, enforcement, free_port


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        pytest.fail(f"Redis is unreachable at {REDIS_URL} ({error})", pytrace=False)
    value = f"clitest-{uuid.uuid4().hex[:12]}:"
    yield value
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def memctl(prefix: str, *arguments: str, key: Path | None = None, agent: str = "ops") -> Result:
    options = ["swarm", "--redis-url", REDIS_URL, "--swarm", "research", "--prefix", prefix]
    options += ["--agent", agent] + (["--key", str(key)] if key else [])
    return CliRunner().invoke(main, [*options, *arguments])


def test_an_operator_registers_keys_queues_work_and_resolves_escalations(
    prefix: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "ops.pem"
    generated = CliRunner().invoke(main, ["swarm", "keys", "generate", str(key_file)])
    assert generated.exit_code == 0, generated.output
    public_key = generated.output.strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert AgentKey.load(key_file.read_bytes()).public_key == public_key
    again = CliRunner().invoke(main, ["swarm", "keys", "generate", str(key_file)])
    assert again.exit_code == 1 and "File exists" in again.output  # never overwritten

    added = memctl(prefix, "keys", "add", "ops", public_key, "--role", "operator")
    assert added.exit_code == 0 and "registered ops (operator)" in added.output
    assert memctl(prefix, "keys", "list").output.startswith(f"ops\toperator\t{public_key}")

    created = memctl(
        prefix, "task", "create", "check the claim", "--data", '{"n": 1}', key=key_file
    )
    assert created.exit_code == 0, created.output
    task_id = created.output.strip()
    shown = memctl(prefix, "task", "show", task_id, key=key_file)
    assert shown.exit_code == 0, shown.output
    assert f"task {task_id} (task) in swarm research: PENDING" in shown.output
    assert "ops                  REQUEST  signed" in shown.output

    worker_key = AgentKey.generate()
    worker = SwarmBus(
        redis.Redis.from_url(REDIS_URL, decode_responses=True), "research", "w1",
        key=worker_key, prefix=prefix, flags=enforcement(True),
    )  # fmt: skip
    worker.register_agent("w1", worker_key.public_key)
    worker.post_finding(task_id, "unsure", 0.1, ["if://citation/1"])
    listed = memctl(prefix, "escalations", "list")
    assert listed.exit_code == 0 and "\topen\tautomatic\ttask " in listed.output
    escalation_id = listed.output.split("\t")[0]
    resolved = memctl(
        prefix, "escalations", "resolve", escalation_id, "checked by hand", key=key_file
    )
    assert resolved.exit_code == 0, resolved.output
    assert memctl(prefix, "escalations", "list").output.strip() == "no escalations"
    assert (
        "resolved by ops: checked by hand" in memctl(prefix, "escalations", "list", "--all").output
    )

    scanned = memctl(prefix, "scan")
    assert scanned.exit_code == 0, scanned.output
    assert "scanned " in scanned.output and "swarm:remediation:" in scanned.output
    health = memctl(prefix, "health", key=key_file)
    assert "redis 7" in health.output or "redis 6" in health.output

    # --json: one document each, the same facts.
    assert json.loads(memctl(prefix, "task", "show", task_id, "--json").output)["id"] == task_id
    registry = json.loads(memctl(prefix, "keys", "list", "--json").output)
    assert registry["agents"]["ops"] == ["operator", public_key]
    (escalation,) = json.loads(memctl(prefix, "escalations", "list", "--all", "--json").output)
    assert (escalation["id"], escalation["resolution"]) == (escalation_id, "checked by hand")
    checked = json.loads(memctl(prefix, "health", "--json").output)
    assert checked["redis_version"] in health.output and checked["queue_length"] == 1
    worker.close()


def test_the_scan_exits_1_on_problems_it_did_not_fix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.set(f"{prefix}task:{'a' * 32}", "not a hash")
    found = memctl(prefix, "scan")
    assert found.exit_code == 1 and "is a string, not a hash" in found.output
    cleaned = memctl(prefix, "scan", "--clean")
    assert cleaned.exit_code == 0 and "-> deleted" in cleaned.output
    client.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["task", "create", "x", "--data", "{broken"], "Error: --data: not valid JSON"),
        (["task", "show", "../etc/passwd"], "Error: task id: must be 1-128 letters"),
        (["task", "show", "0" * 32], "Error: task 00000000000000000000000000000000: no such task"),
        (["keys", "add", "w1", "not-a-key"], "Error: public key: must be the base64"),
        (["escalations", "resolve", "0" * 32, "x"], "Error: escalation 0000"),
    ],
)
def test_bad_input_is_one_line_without_a_traceback(
    prefix: str, arguments: list[str], message: str
) -> None:
    result = memctl(prefix, *arguments)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_a_dead_server_a_missing_swarm_and_a_bad_key_file(prefix: str, tmp_path: Path) -> None:
    dead = CliRunner().invoke(
        main,
        ["swarm", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--swarm", "s", "health"],
    )
    assert (
        dead.exit_code == 1 and "is unreachable" in dead.output and "Traceback" not in dead.output
    )
    missing = CliRunner().invoke(
        main, ["swarm", "--redis-url", REDIS_URL, "health"], env={"MEMORY_SWARM": ""}
    )
    assert missing.exit_code == 2 and "--swarm (or $MEMORY_SWARM) is required" in missing.output
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    result = memctl(prefix, "health", key=bad_key)
    assert result.exit_code == 1 and "private key: not an unencrypted PEM key" in result.output


def test_without_the_swarm_extra_memctl_works_and_swarm_says_what_to_install(
    tmp_path: Path,
) -> None:
    # A fresh interpreter where redis cannot be imported, as after `pip install tiered-memory`.
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "from click.testing import CliRunner\n"
        "from memory.cli import main\n"
        "print(CliRunner().invoke(main, ['--help']).exit_code)\n"
        f"arguments = ['swarm', 'keys', 'generate', {str(tmp_path / 'k')!r}]\n"
        "result = CliRunner().invoke(main, arguments)\n"
        "print(result.exit_code, result.output)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1] == (
        "1 Error: memctl swarm needs the package 'redis': pip install 'tiered-memory[swarm]'"
    )
    assert not (tmp_path / "k").exists()
