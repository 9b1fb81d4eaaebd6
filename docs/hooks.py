"""MkDocs hooks: pages that are the repository's own files, and tables built from the code.

- The runbooks (``runbooks/*.md``), ``ARCHITECTURE.md`` and ``CHANGELOG.md`` become pages
  as they are, so the site cannot drift from them.
- ``<!-- builtin-flags -->`` becomes the table of the built-in rollout flags and their
  defaults (``flags.BUILTIN_FLAGS``); ``<!-- alert-thresholds -->`` the table of alert
  rules with their thresholds, windows and severities (``dashboards/alerts.yml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from flags import BUILTIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
# Site path -> repository file.
REPOSITORY_PAGES = {
    **{f"runbooks/{path.name}": path for path in sorted((ROOT / "runbooks").glob("*.md"))},
    "architecture.md": ROOT / "ARCHITECTURE.md",
    "changelog.md": ROOT / "CHANGELOG.md",
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, path in REPOSITORY_PAGES.items():
        files.append(File.generated(config, uri, content=path.read_text("utf-8")))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return markdown.replace("<!-- builtin-flags -->", _flags_table()).replace(
        "<!-- alert-thresholds -->", _alerts_table()
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _flags_table() -> str:
    rows = [
        "| Flag | Default | Rollout | Sticky by | Needs | What it switches |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, flag in BUILTIN_FLAGS.items():
        rows.append(
            f"| `{name}` | {'on' if flag.default else 'off'} | {flag.rollout} % | "
            f"`{flag.stickiness}` | {f'`{flag.parent}`' if flag.parent else '—'} | "
            f"{_cell(flag.description)} |"
        )
    return "\n".join(rows)


def _alerts_table() -> str:
    rules: list[dict[str, Any]] = [
        rule
        for group in yaml.safe_load((ROOT / "dashboards" / "alerts.yml").read_text("utf-8"))[
            "groups"
        ]
        for rule in group["rules"]
        if "alert" in rule
    ]
    rows = ["| Alert | Severity | For | Fires when |", "| --- | --- | --- | --- |"]
    for rule in rules:
        link = f"runbooks/monitoring.md#{rule['alert'].lower()}"
        rows.append(
            f"| [{rule['alert']}]({link}) | {rule['labels']['severity']} | "
            f"{rule.get('for', '—')} | `{_cell(rule['expr'])}` |"
        )
    return "\n".join(rows)
