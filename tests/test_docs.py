"""The reference site builds with ``mkdocs build --strict`` and documents everything it
promises: every name of the agent, operator and flags APIs, every ``memctl`` command, every
environment variable the code reads, every built-in flag with its default, every alert with
its threshold, and every runbook, the architecture and the changelog."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

import flags
import memory
import memory.ops
from memory.cli import main

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).parent / "mkdocs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(MKDOCS.parent)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text("utf-8")


def anchors(text: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', text))


def text_of(text: str) -> str:
    """The text a reader sees, with every run of white space as one space."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.mark.parametrize(
    ("module", "name"),
    [(memory, "agent-api"), (memory.ops, "operator-api"), (flags, "flags-api")],
)
def test_every_public_name_has_its_entry(site: Path, module: object, name: str) -> None:
    ids = anchors(page(site, name))
    prefix = getattr(module, "__name__")  # noqa: B009 (module is typed as object)
    # memory.ops.backup is a module and the function it exports: rendered from the module.
    missing = [
        exported for exported in getattr(module, "__all__")  # noqa: B009
        if f"{prefix}.{exported}" not in ids and f"{prefix}.{exported}.{exported}" not in ids
    ]  # fmt: skip
    assert missing == []


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix}{name} ")
    return found


def test_every_memctl_command_and_option_is_documented(site: Path) -> None:
    text = page(site, "memctl")
    shown = text_of(text)
    for name, command in commands(main):
        assert f"memctl {name}" in shown, f"memctl {name} is not on the page"
        for parameter in command.params:
            for option in getattr(parameter, "opts", []):
                if option.startswith("--"):
                    assert option in shown, f"memctl {name} {option}"


def environment_variables() -> set[str]:
    """Every environment variable the code reads: ``*_ENV`` constants and literal names."""
    names: set[str] = set()
    for path in [*ROOT.glob("memory/**/*.py"), *ROOT.glob("flags/**/*.py")]:
        source = path.read_text("utf-8")
        names |= set(re.findall(r'^\w+_ENV = "([A-Z][A-Z0-9_]+)"', source, re.MULTILINE))
        names |= set(re.findall(r'environ\.get\("([A-Z][A-Z0-9_]+)"', source))
    return names


def test_every_configuration_variable_and_flag_is_documented(site: Path) -> None:
    shown = text_of(page(site, "configuration"))
    variables = environment_variables()
    assert {"MEMORY_DATABASE_URL", "MEMORY_BACKUP_DIR", "MEMORY_METRICS"} <= variables
    assert [name for name in sorted(variables) if name not in shown] == []
    for name, flag in flags.BUILTIN_FLAGS.items():
        row = re.search(rf"{name} (on|off) (\d+) %", shown)
        assert row is not None, f"{name} has no row in the flags table"
        assert row.groups() == ("on" if flag.default else "off", str(flag.rollout))


def test_every_alert_is_listed_with_its_threshold(site: Path) -> None:
    shown = text_of(page(site, "metrics"))
    rules = yaml.safe_load((ROOT / "dashboards" / "alerts.yml").read_text("utf-8"))
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        expression = " ".join(rule["expr"].split())
        assert f"{rule['alert']} {rule['labels']['severity']}" in shown, rule["alert"]
        assert expression in shown, rule["alert"]
    # And every series the library records, from the instruments' own documentation.
    assert "memory_injection_latency_milliseconds_bucket" in shown
    assert "memory_schema_revision" in shown


def test_the_runbooks_architecture_and_changelog_are_the_repositorys_files(site: Path) -> None:
    pages = {f"runbooks/{path.stem}": path for path in (ROOT / "runbooks").glob("*.md")}
    pages |= {"architecture": ROOT / "ARCHITECTURE.md", "changelog": ROOT / "CHANGELOG.md"}
    for name, source in pages.items():
        shown = text_of(page(site, name))
        for heading in re.findall(r"^#+ (.+)$", source.read_text("utf-8"), re.MULTILINE):
            plain = text_of(heading.replace("`", ""))
            assert plain.strip() in shown, f"{name}: {heading}"
