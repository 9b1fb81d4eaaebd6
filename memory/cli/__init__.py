"""``memctl``: click commands, each a thin client of :mod:`memory` and :mod:`memory.ops`."""

from memory.cli.app import main

__all__ = ["main"]
