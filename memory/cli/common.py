"""What every ``memctl`` command shares: error reporting, engine and store handles, scope options.

Command groups live in their own ``memory/_cli_*.py`` modules, built on these helpers, and
``memory.cli`` registers them on the ``memctl`` group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from memory.client import Memory
from memory.core.errors import MemoryStoreError
from memory.store.engine import create_engine

__all__ = ["F", "memory_handle", "engine_handle", "reports_errors", "scope_options"]

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn the library's errors into one ``Error: ...`` line and exit status 1."""
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MemoryStoreError as error:
            raise click.ClickException(str(error)) from error
        except DBAPIError as error:
            raise click.ClickException(f"database error: {error.orig}") from error

    return wrapper  # type: ignore[return-value]


@contextmanager
def engine_handle(context: click.Context) -> Iterator[Engine]:
    """An engine on the command's database URL, disposed when the command ends."""
    engine = create_engine(context.obj["database_url"])
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def memory_handle(context: click.Context) -> Iterator[Memory]:
    """A :class:`Memory` on the command's database URL, closed when the command ends."""
    with Memory.open(context.obj["database_url"]) as memory:
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
