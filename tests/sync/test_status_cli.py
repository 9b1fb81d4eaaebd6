"""``memctl sync status`` against a hub gateway on its own thread (as ``memctl serve`` runs
it), and the service settings that turn the gateway on."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.cli import main
from memory.service.settings import load_settings
from memory.sync.hub import BackgroundHub, HubGateway
from memory.sync.spoke import SpokeStore
from tests.sync.processes import SECRET


@pytest.fixture
def hub(make_postgres_database: Callable[[], str]) -> Iterator[BackgroundHub]:
    with Memory.open(make_postgres_database(), embedder=HashingEmbedder()) as memory:
        running = BackgroundHub(HubGateway(SpokeStore(memory), SECRET))
        running.start()
        try:
            yield running
        finally:
            running.stop()


def status(*arguments: str, secret: str = SECRET) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["sync", "status", *arguments], env={"MEMORY_SYNC_SECRET": secret}
    )
    return result.exit_code, result.output


def test_status_reports_the_hub(hub: BackgroundHub) -> None:
    code, output = status("--hub", f"127.0.0.1:{hub.gateway.port}", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["hub"] == hub.gateway.node_id
    assert report["nodes"] == {} and report["backlog"] == 0 and report["p2p_ratio"] == 0.0
    code, output = status("--hub", f"127.0.0.1:{hub.gateway.port}")
    assert code == 0 and output.startswith(f"hub {hub.gateway.node_id}: 0 node(s)")
    assert "conflicts: none" in output


def test_a_wrong_secret_is_refused_by_the_hub(hub: BackgroundHub) -> None:
    code, output = status("--hub", f"127.0.0.1:{hub.gateway.port}", secret="x" * 40)
    assert code == 1
    assert output.startswith("Error: cannot get the status of the sync hub")
    assert "no valid token for node 'memctl'" in output


def test_an_unreachable_hub_is_one_error_line() -> None:
    code, output = status("--hub", "127.0.0.1:1", "--timeout", "2")
    assert code == 1 and output.count("\n") == 1
    assert output.startswith("Error: cannot get the status of the sync hub at 127.0.0.1:1")


def test_a_taken_sync_port_is_a_clear_error(hub: BackgroundHub) -> None:
    second = BackgroundHub(HubGateway(hub.gateway.store, SECRET, port=hub.gateway.port))
    with pytest.raises(
        InvalidInputError, match=f"sync_port: cannot listen on 127.0.0.1:{hub.gateway.port}"
    ):
        second.start()


def test_the_sync_port_needs_the_secret_and_tls_needs_both_files() -> None:
    with pytest.raises(InvalidInputError, match="sync_port is set but sync_secret is not"):
        load_settings(sync_port=7400)
    with pytest.raises(InvalidInputError, match="sync_secret: String should have at least 32"):
        load_settings(sync_port=7400, sync_secret="short")
    with pytest.raises(InvalidInputError, match="sync_tls_certificate and sync_tls_key go"):
        load_settings(sync_port=7400, sync_secret=SECRET, sync_tls_certificate="cert.pem")
    settings = load_settings(sync_port=7400, sync_secret=SECRET)
    assert settings.sync_port == 7400 and settings.sync_rate_limit == 200.0
