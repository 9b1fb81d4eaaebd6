"""Hub-spoke sync (MEMSHADOW v2): every node keeps its own tiered memory and exchanges
checksummed delta batches with the hub and its peers.

``items`` holds the units of transfer, ``clocks`` the hybrid logical clock, version
vectors, deltas and the conflict rule, ``spoke`` the local half of a spoke (delta batches
from its store, idempotent apply, the outbox). Imports only ``memory``, ``memory.ops`` and
``memory.core`` (a contract).
"""
