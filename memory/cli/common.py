"""What every ``memctl`` command shares: error reporting, the store handle, scope options.

Command groups live in their own ``memory/cli/*.py`` modules, built on these helpers, and
``memory.cli.app`` registers them on the ``memctl`` group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from memory import Memory, MemoryStoreError
from memory.ops import DatabaseError, RefusedError, command_database

__all__ = [
    "F",
    "Memctl",
    "database_url",
    "echo_json",
    "json_object_argument",
    "json_option",
    "memory_handle",
    "plural",
    "reported_errors",
    "scope_options",
    "text_argument",
]

F = TypeVar("F", bound=Callable[..., Any])

# Set to 1 to let an unexpected exception through with its traceback (for a bug report).
TRACEBACK_ENV = "MEMCTL_TRACEBACK"


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn every failure into one ``Error: ...`` line: the library's errors, database and
    file errors exit 1; a refusal that names the options to give instead
    (:class:`memory.ops.RefusedError`) is a usage error, exit 2. Anything else is a bug,
    reported in one line too (``$MEMCTL_TRACEBACK=1`` shows where)."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except BrokenPipeError:  # the reader went away (memctl ... | head): nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes it at exit
        raise click.exceptions.Exit(1) from None
    except RefusedError as error:
        raise click.UsageError(str(error)) from error
    except MemoryStoreError as error:
        raise click.ClickException(str(error)) from error
    except DatabaseError as error:
        raise click.ClickException(f"database error: {error.orig}") from error
    except UnicodeError as error:  # before OSError's cousins: a file that is not UTF-8 text
        raise click.ClickException(f"not UTF-8 text: {error}") from error
    except OSError as error:  # a file or directory the operator named: say which, no traceback
        raise click.ClickException(str(error)) from error
    except RecursionError as error:
        raise click.ClickException("the input is nested too deeply") from error
    except Exception as error:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        raise click.ClickException(
            f"unexpected {type(error).__name__}: {error} (this is a bug: please report it, "
            f"with the output of the same command run with {TRACEBACK_ENV}=1)"
        ) from error


class Memctl(click.Group):
    """The root group: every command, and every group's own callback, runs inside
    :func:`reported_errors`, so no command can show a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        with reported_errors(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return super().invoke(ctx)


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning (such as :class:`memory.FlagOffWarning`) as one ``warning:`` line on stderr,
    without the source line Python would print under it."""
    click.echo(f"warning: {message}", err=True)


def database_url(context: click.Context, *, existing: bool = False) -> str:
    """The command's database URL (``--database-url``, else the library's default), refused
    when it is in memory and, for a command that needs an ``existing`` database (every
    command that reads, or changes what a schema holds), when the file is missing
    (see :func:`memory.ops.command_database`)."""
    url: str | None = context.obj["database_url"]
    return command_database(url, existing=existing)


@contextmanager
def memory_handle(context: click.Context, *, existing: bool = False) -> Iterator[Memory]:
    """A :class:`Memory` on the command's database URL, closed when the command ends."""
    with Memory.open(database_url(context, existing=existing)) as memory:
        yield memory


def json_option(command: F) -> F:
    """Add ``--json``: the command prints one JSON document instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as one JSON document."
    )(command)


def echo_json(document: Any) -> None:
    """Print ``document`` as JSON (dates as ISO 8601, text as it is)."""
    click.echo(json.dumps(document, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``0 memories`` (give ``nouns`` where adding an s is wrong)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def json_object_argument(value: str, name: str) -> dict[str, Any]:
    """A JSON object given inline, as ``@FILE`` or as ``-`` (see :func:`text_argument`)."""
    try:
        parsed = json.loads(text_argument(value, name))
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=name) from error
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint=name)
    return parsed


def text_argument(value: str, name: str) -> str:
    """A text option or argument as the operator meant it: ``-`` reads standard input,
    ``@PATH`` reads the file (UTF-8), ``@@...`` is the text ``@...``; anything else is the
    text itself. Standard input and files lift the shell's limit on argument length."""
    if value == "-":
        try:
            data: bytes = sys.stdin.buffer.read()
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise click.BadParameter(
                f"standard input is not UTF-8: {error}", param_hint=name
            ) from error
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise click.BadParameter(
                f"{path} is not UTF-8 text: {error}", param_hint=name
            ) from error
        except OSError as error:
            raise click.BadParameter(
                f"cannot read {path}: {error.strerror}", param_hint=name
            ) from error
    return value


def scope_options(command: F) -> F:
    """Add ``--user`` (required), ``--agent`` and ``--session`` to a command."""
    command = click.option("--session", default=None, help="Session id (optional).")(command)
    command = click.option(
        "--agent",
        default="memctl",
        show_default=True,
        help="The agent acting (memories are private to their agent).",
    )(command)
    command = click.option("--user", required=True, help="The user the memories belong to.")(
        command
    )
    return command
