"""``omniret serve``: the REST API and search page with uvicorn."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from omniret.cli._app import (
    DeviceOpt,
    DevicesOpt,
    DtypeOpt,
    InferenceBackendOpt,
    ModelOpt,
    QuantizeOpt,
    RerankerOpt,
    RootOpt,
    app,
    console,
    err_console,
    fail,
    handles_errors,
)


def settings_env(*, host: str | None, port: int | None, model: str | None, reranker: str | None,
                 no_reranker: bool, root: str | None, api_keys: list[str] | None, device: str | None,
                 dtype: str | None, micro_batching: bool | None, qdrant_url: str | None = None,
                 cors_origins: list[str] | None = None, devices: str | None = None, backend: str | None = None,
                 quantize: str | None = None) -> dict[str, str]:
    """``OMNIRET_*`` variables for the given options: the app (and every uvicorn worker) reads them."""
    env: dict[str, str] = {}
    pairs = {"HOST": host, "PORT": port, "EMBED_MODEL": model, "COLLECTIONS_ROOT": root, "DEVICE": device,
             "DTYPE": dtype, "QDRANT_URL": qdrant_url, "DEVICES": devices, "BACKEND": backend, "QUANTIZE": quantize}
    for key, value in pairs.items():
        if value is not None:
            env[f"OMNIRET_{key}"] = str(value)
    if no_reranker:
        env["OMNIRET_RERANK_MODEL"] = ""
    elif reranker is not None:
        env["OMNIRET_RERANK_MODEL"] = reranker
    if api_keys:
        env["OMNIRET_API_KEYS"] = json.dumps(api_keys)
    if micro_batching is not None:
        env["OMNIRET_MICRO_BATCHING"] = "true" if micro_batching else "false"
    if cors_origins:
        env["OMNIRET_CORS_ORIGINS"] = json.dumps(cors_origins)
    return env


def cors_origins_or_none(origins: list[str] | None) -> list[str] | None:
    """The ``--cors-origin`` values, each checked to be an origin (scheme://host[:port], or ``*``)."""
    if not origins:
        return None
    import re

    from omniret.errors import ConfigError

    for o in origins:
        if o != "*" and not re.fullmatch(r"https?://[^/\s]+", o):
            raise ConfigError(f"--cors-origin {o!r}: give an origin like https://app.example.com (scheme and "
                              "host, no path) or *")
    return list(origins)


@app.command()
@handles_errors
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Interface to bind (default: OMNIRET_HOST, "
                                                            "127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port (default: OMNIRET_PORT, 8000).")] = None,
    model: ModelOpt = None,
    reranker: RerankerOpt = None,
    no_reranker: Annotated[bool, typer.Option("--no-reranker", help="Serve without a reranker.")] = False,
    root: RootOpt = None,
    qdrant_url: Annotated[str | None, typer.Option("--qdrant-url", help="Qdrant server for collections created "
                                                                        "with backend 'qdrant'.")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Require this Bearer key (repeatable; "
                                                                        "default: OMNIRET_API_KEYS).")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="Let a browser app on this origin "
                                                                             "call the API (repeatable; default: "
                                                                             "OMNIRET_CORS_ORIGINS, none).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes; each loads its own models.")] = 1,
    micro_batching: Annotated[bool | None, typer.Option("--micro-batching/--no-micro-batching",
                                                        help="Merge concurrent requests into model batches.")] = None,
    device: DeviceOpt = None,
    devices: DevicesOpt = None,
    dtype: DtypeOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    backend: InferenceBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Serve embeddings, rerank, collections and the search page over HTTP (OpenAI-compatible /v1/embeddings)."""
    import uvicorn

    from omniret.settings import get_settings

    if api_key:  # the flag decides the keys: an OMNIRET_API_KEY in the environment must not conflict with it
        os.environ.pop("OMNIRET_API_KEY", None)
    os.environ.update(settings_env(host=host, port=port, model=model, reranker=reranker, no_reranker=no_reranker,
                                   root=str(root) if root is not None else None, api_keys=api_key,
                                   device=device, dtype=dtype, micro_batching=micro_batching,
                                   qdrant_url=qdrant_url, cors_origins=cors_origins_or_none(cors_origin),
                                   devices=devices, backend=backend, quantize=quantize))
    settings = get_settings()  # validates the options before any model loads
    if settings.devices:
        from omniret.embed.pool import parse_devices

        parse_devices(settings.devices)
        if workers > 1:
            fail("--devices and --workers: give one (--devices runs one model replica per device in one server)")
    warning = settings.exposure_warning()
    if warning:
        err_console.rule("[bold red]WARNING", style="red")
        err_console.print(f"[bold red]{warning}[/]", highlight=False)
        err_console.rule(style="red")
    if workers > 1 and not settings.embed_model:
        fail("--workers needs a model name or path every worker can load", hint="omniret serve --model minilm")
    console.print(f"omniret serving {settings.embed_model} on http://{settings.host}:{settings.port} "
                  f"(search page at /, docs at /docs)", highlight=False)
    if workers == 1:
        from omniret.api import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
    else:  # each worker process builds its app from the same OMNIRET_* environment
        uvicorn.run("omniret.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=workers, log_level=log_level)
