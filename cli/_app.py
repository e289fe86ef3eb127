"""The typer app, shared options, and the one-line error printer every command uses."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from omniret.settings import Settings

app = typer.Typer(
    name="omniret",
    help="Multimodal retrieval: embed, rerank, index, search, serve, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: Off a terminal (a log file, a pipe, CI) rich would squeeze tables into 80 columns and cut cells to
#: ``0.8…``; there the consoles are as wide as their lines, so every value is printed in full.
_LOG_WIDTH = 100_000
console = Console(width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _LOG_WIDTH)

# Options shared by several commands, declared once.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Embedding model: registry name, hub id or path "
                                                                  "(default: OMNIRET_EMBED_MODEL).")]
RerankerOpt = Annotated[str | None, typer.Option("--reranker", help="Reranker: registry name, hub id or path.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="torch device (default: OMNIRET_DEVICE, else cuda "
                                                                "if available).")]
DevicesOpt = Annotated[str | None, typer.Option(
    "--devices", help="One model worker process per device: auto (every CUDA device, else cpu), cuda:0,cuda:1 "
                      "or cpu,cpu.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 (default: "
                                                              "OMNIRET_DTYPE).")]
InstructionOpt = Annotated[str | None, typer.Option("--instruction", "-i", help="Task instruction (queries).")]
DimOpt = Annotated[int | None, typer.Option("--dim", help="Matryoshka dimension (a prefix, re-normalised).")]
RootOpt = Annotated[Path | None, typer.Option("--root", help="Collections folder (default: $OMNIRET_HOME/collections).")]
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_MODEL_BACKEND_HELP = ("Where sentence-transformers models run: torch, onnx (ONNX Runtime), openvino, or auto (onnx "
                       "when the model and extras allow, else torch; the choice is printed). Default: "
                       "OMNIRET_BACKEND, torch.")
#: --backend where a command has no store backend (embed, rerank, serve); --model-backend everywhere
InferenceBackendOpt = Annotated[str | None, typer.Option("--backend", "--model-backend", help=_MODEL_BACKEND_HELP)]
#: index, search and eval: --backend already names the store (faiss, qdrant)
ModelBackendOpt = Annotated[str | None, typer.Option("--model-backend", help=_MODEL_BACKEND_HELP)]
QuantizeOpt = Annotated[str | None, typer.Option("--quantize", help="int8: dynamic int8 quantization on the onnx "
                                                                    "backend (default: OMNIRET_QUANTIZE, none).")]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def cli_settings() -> Settings:
    """The settings for this command, built once at the edge (``OMNIRET_*`` environment, config file) and
    passed down: library code reads none of its own."""
    from omniret.settings import get_settings

    return get_settings()


def model_options(settings: Settings, backend: str | None, quantize: str | None) -> dict[str, Any]:
    """The backend options for the model loaders: the command's flags over the settings."""
    options = settings.model_options()
    if backend is not None:
        options["backend"] = backend
        if quantize is None and backend not in ("onnx", "auto"):
            options["quantize"] = None  # OMNIRET_QUANTIZE=int8 belongs to the onnx backend it was set with
    if quantize is not None:
        options["quantize"] = quantize
    return options


def report_backend(model: Any, what: str = "model") -> None:
    """Print the backend a model runs on when ``auto`` chose it (a choice is said, never hidden)."""
    if getattr(model, "backend_requested", None) == "auto":
        err_console.print(f"[dim]{what} {getattr(model, 'name', '')}: backend auto chose "
                          f"{getattr(model, 'backend', 'torch')}[/]", highlight=False)


def debug_enabled() -> bool:
    """The ``debug`` setting (``OMNIRET_DEBUG=1`` or ``debug = true`` in the config file). The variable is
    read first and directly: it must work when building the settings is what failed."""
    raw = os.environ.get("OMNIRET_DEBUG")
    if raw is not None:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    try:
        return cli_settings().debug
    except Exception:  # noqa: BLE001 - broken settings are the error being reported, not a second one
        return False


def fail(message: str, hint: str | None = None) -> NoReturn:
    """Print one error line (and the next command to try), then exit 1."""
    from rich.markup import escape

    # messages quote paths, JSON and library errors whose brackets are not rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err_console.print(f"[dim]try:[/] {escape(hint)}", highlight=False)
    raise typer.Exit(1)


def renamed(value: T, old_value: T | None, *, new: str, old: str, default: T) -> T:
    """The value of an option that has a new spelling: the old one still works (hidden from ``--help``,
    kept for scripts) with a warning; both at once is an error."""
    if old_value is None:
        return value
    if value != default:
        fail(f"{old} and {new} are the same option; give only {new}")
    err_console.print(f"[yellow]warning:[/] {old} is deprecated; use {new}", highlight=False)
    return old_value


def run() -> None:
    """Run the app; omniret's own errors print one line unless OMNIRET_DEBUG=1."""
    from omniret.errors import OmniretError

    debug = debug_enabled()
    try:
        app()
    except (OmniretError, FileNotFoundError) as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        err_console.print("[dim]set OMNIRET_DEBUG=1 for the traceback[/]", highlight=False)
        sys.exit(1)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for commands: omniret's errors become one line and exit code 1 (traceback with OMNIRET_DEBUG=1)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from omniret.errors import OmniretError

        try:
            return fn(*args, **kwargs)
        except (OmniretError, FileNotFoundError) as e:
            if debug_enabled():
                raise
            fail(str(e), hint="set OMNIRET_DEBUG=1 for the traceback")

    return wrapper
