"""What every ``memctl`` command shares: error reporting, the store handle, scope options.

Command groups live in their own ``memory/cli/*.py`` modules, built on these helpers, and
``memory.cli.app`` registers them on the ``memctl`` group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click

from memory import Memory, MemoryStoreError
from memory.ops import DatabaseError, RefusedError

__all__ = ["F", "database_url", "memory_handle", "reports_errors", "scope_options"]

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn the library's errors, database errors and file errors into one ``Error: ...`` line
    and exit status 1; a refusal that names the options to give instead
    (:class:`memory.ops.RefusedError`) is a usage error, exit status 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RefusedError as error:
            raise click.UsageError(str(error)) from error
        except MemoryStoreError as error:
            raise click.ClickException(str(error)) from error
        except DatabaseError as error:
            raise click.ClickException(f"database error: {error.orig}") from error
        except OSError as error:  # a file or directory the operator named: say which, no traceback
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


def database_url(context: click.Context) -> str | None:
    """The command's ``--database-url`` (None: the library's default)."""
    url: str | None = context.obj["database_url"]
    return url


@contextmanager
def memory_handle(context: click.Context) -> Iterator[Memory]:
    """A :class:`Memory` on the command's database URL, closed when the command ends."""
    with Memory.open(database_url(context)) as memory:
        yield memory


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
