"""Every ``memctl`` failure is one ``Error: ...`` line and an exit status, never a traceback:
here the file-system errors of paths the operator names (a backup or archive directory
under a file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from memory.cli import main


@pytest.mark.parametrize(
    "command",
    [["backup", "{file}/backup"], ["rollback", "--to", "base", "--archive", "{file}/archive"]],
    ids=["backup", "rollback-archive"],
)
def test_a_directory_under_a_file_is_an_error_line(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    assert CliRunner().invoke(main, ["--database-url", url, "migrate"]).exit_code == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")

    result = CliRunner().invoke(
        main, ["--database-url", url, *(part.format(file=blocker) for part in command)]
    )

    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and str(blocker) in result.output
    assert isinstance(result.exception, SystemExit)  # reported, not raised
