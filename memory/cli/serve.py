"""``memctl serve``: the memory hub as a service (``memory.service``)."""

from __future__ import annotations

from pathlib import Path

import click

from memory.ops import command_database


@click.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A TOML file with a [service] table; ${VAR:default} is read from the environment.",
)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", "http_port", type=int, default=None, help="HTTP port (default 8080).")
@click.option(
    "--grpc-port", type=int, default=None, help="gRPC port (default 5714; 0: any free port)."
)
@click.option(
    "--embedder",
    type=click.Choice(["minilm", "hashing", "none"]),
    default=None,
    help="The embedding model (default minilm).",
)
@click.pass_context
def serve(
    context: click.Context,
    config_file: Path | None,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    embedder: str | None,
) -> None:
    """Serve the store over HTTP/JSON and gRPC with API keys (see `memctl keys`) until
    SIGTERM.

    Settings: these options, then $MEMORY_SERVICE_* (HTTP_PORT, GRPC_PORT,
    GRPC_TLS_CERTIFICATE, GRPC_TLS_KEY, HOST, MAX_BODY_BYTES, EMBEDDER, LOG_LEVEL,
    DRAIN_SECONDS, DATABASE_URL), then --config, then the defaults.
    """
    # The server's packages are the 'service' extra's: imported when serving, so that
    # every other command works without them.
    try:
        from memory.service import load_settings
        from memory.service import serve as serve_forever
    except ImportError as error:
        raise click.ClickException(
            f"memctl serve needs the 'service' extra ({error.name} is missing): "
            "pip install 'tiered-memory[service]'"
        ) from None
    settings = load_settings(
        config_file, host=host, http_port=http_port, grpc_port=grpc_port, embedder=embedder
    )
    # --database-url (or $MEMORY_DATABASE_URL) wins over the file's database_url.
    url = command_database(context.obj["database_url"] or settings.database_url, existing=True)
    serve_forever(settings.model_copy(update={"database_url": url}))
