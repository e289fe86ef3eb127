"""The ``omniret`` command line: a thin typed layer over the Python API.

Each command group lives in its own module here and registers itself on ``app``; torch and the
models are imported inside the commands, so ``omniret --help`` is instant.
"""

from __future__ import annotations

import importlib
import importlib.util

from omniret.cli._app import app, run

#: command modules, in help order; each registers its commands on ``app`` when imported
_COMMAND_MODULES = ("embed", "rerank", "index", "serve", "train", "eval")

for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"omniret.cli.{_name}") is not None:
        importlib.import_module(f"omniret.cli.{_name}")


def main() -> None:
    """Console entry point."""
    run()


__all__ = ["app", "main"]
