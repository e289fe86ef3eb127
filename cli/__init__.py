"""The ``omniret`` command line: a thin typed layer over the Python API.

Each command group lives in its own module here and registers itself on ``app``; torch and the
models are imported inside the commands, so ``omniret --help`` is instant.
"""

from __future__ import annotations

import importlib
import importlib.util

from omniret.cli._app import app, run

#: command modules, in help order; each registers its commands on ``app`` when imported
_COMMAND_MODULES = ("embed", "rerank", "index", "collections", "serve", "train", "eval")

for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"omniret.cli.{_name}") is not None:
        importlib.import_module(f"omniret.cli.{_name}")


#: options whose value may be left out, and the value that stands for it (``--ray`` alone: a local Ray
#: cluster); click can declare that, but typer does not pass the declaration through
OPTIONAL_VALUES = {"--ray": "local"}


def fill_optional_values(argv: list[str]) -> list[str]:
    """``argv`` with the stand-in value after an optional-value option given last or before another option."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def main() -> None:
    """Console entry point."""
    import sys

    sys.argv[1:] = fill_optional_values(sys.argv[1:])
    run()


__all__ = ["app", "main"]
