"""The systemd unit of a hub replica: restarted always, stopped with the SIGTERM that
drains, and its command line one that ``memctl serve`` accepts."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from memory.cli import main

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "memory-hub@.service"


def test_the_unit_restarts_always_drains_on_sigterm_and_runs_memctl_serve() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string(UNIT.read_text("utf-8"))
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 10  # longer than the default drain_seconds
    command = shlex.split(service["ExecStart"].replace("%i", "8080"))
    assert Path(command[0]).name == "memctl" and command[1] == "serve"
    serve = main.commands["serve"]
    context = serve.make_context("serve", command[2:])
    assert context.params["http_port"] == 8080
    assert context.params["config_file"] == Path("/etc/tiered-memory/hub.toml")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
