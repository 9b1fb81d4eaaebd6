"""The memory hub as a service (``memctl serve``): one transport-free core
(``memory.service.core``) under the HTTP (``memory.service.http``), gRPC
(``memory.service.grpc``) and ZeroMQ (``memory.service.zeromq``) transports.

Its public API, for ``memctl`` and for embedding the server elsewhere: :func:`serve` runs
it with :class:`ServiceSettings`, which :func:`load_settings` reads from arguments, the
environment and a TOML file. Needs the ``service`` extra.
"""

from memory.service.server import serve
from memory.service.settings import ServiceSettings, load_settings

__all__ = ["ServiceSettings", "load_settings", "serve"]
