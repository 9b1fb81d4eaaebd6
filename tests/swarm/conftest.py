"""The swarm bus's fixtures: the real Redis at ``$MEMORY_TEST_REDIS_URL`` (default the local
server, database 0), a unique key prefix per test (everything under it is deleted
afterwards), agents with keys registered in their swarm, and a redis-server of our own on a
spare loopback port for the tests that stop it.

Tests FAIL (not skip) when Redis is unreachable or ``redis-server`` is missing.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flags import USE_SWARM_SIGNATURE_ENFORCEMENT, FlagEvaluator
from memory.swarm import AgentKey, SwarmBus, connect

REDIS_URL = os.environ.get("MEMORY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def enforcement(on: bool) -> FlagEvaluator:
    """An evaluator with signature enforcement switched on or off (nothing else read)."""
    return FlagEvaluator(environ={USE_SWARM_SIGNATURE_ENFORCEMENT: "on" if on else "off"})


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = connect(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        pytest.fail(
            f"Redis is unreachable at {REDIS_URL} ({error}); start it with "
            "`redis-server --daemonize yes`",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted when the test ends."""
    value = f"swarmtest-{uuid.uuid4().hex[:12]}:"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@dataclass
class Swarm:
    """Buses for agents of one swarm, keys registered, sharing one prefix."""

    client: redis.Redis
    prefix: str
    name: str
    keys: dict[str, AgentKey]

    def bus(
        self,
        agent: str,
        *,
        enforce: bool | None = True,
        signed: bool = True,
        lease: timedelta = timedelta(seconds=30),
        **options: Any,
    ) -> SwarmBus:
        key = self.keys.setdefault(agent, AgentKey.generate()) if signed else None
        bus = SwarmBus(
            self.client,
            self.name,
            agent,
            key=key,
            prefix=self.prefix,
            lease=lease,
            flags=None if enforce is None else enforcement(enforce),
            **options,
        )
        if key is not None:
            bus.register_agent(agent, key.public_key)
        return bus


@pytest.fixture
def swarm(redis_client: redis.Redis, prefix: str) -> Swarm:
    return Swarm(redis_client, prefix, "research", {})


@pytest.fixture
def make_swarm(redis_client: redis.Redis, prefix: str) -> Callable[[str], Swarm]:
    def make(name: str) -> Swarm:
        return Swarm(redis_client, prefix, name, {})

    return make


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of our own: loopback only, a temporary directory, AOF on (fsync on
    every write, so an acknowledged write is on disk), stopped and removed at the end."""

    def __init__(self, tls: Path | None = None) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server is not installed: apt-get install redis-server", pytrace=False
            )
        self.executable = executable
        self.directory = Path(tempfile.mkdtemp(prefix="tiered-memory-swarm-redis-"))
        self.port = free_port()
        # With ``tls`` (a directory holding ca.pem, server.pem, server.key), the port speaks
        # only TLS: clients use rediss:// and must trust ca.pem.
        self.extra: tuple[str, ...] = ()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        if tls is not None:
            self.extra = (
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(tls / "server.pem"),
                "--tls-key-file", str(tls / "server.key"),
                "--tls-ca-cert-file", str(tls / "ca.pem"),
                "--tls-auth-clients", "no",
            )  # fmt: skip
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={tls / 'ca.pem'}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "yes",
                *self.extra,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.process.returncode}")
                time.sleep(0.05)
        pytest.fail("redis-server did not start within 15 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only what the AOF already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.remove()


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it, valid one hour:
    ca.pem, server.pem and server.key in ``directory``."""
    now = datetime.now(UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarm test CA")])
    ca = certificate("swarm test CA", ca_key, ca_name, ca_key, ca=True)
    server = certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tls=make_certificates(tmp_path))
    server.start()
    yield server
    server.remove()
