"""``Settings``: every knob omniret reads, from init arguments, ``OMNIRET_*`` variables and a config file.

Precedence is init > environment > config file > defaults. The config file is TOML or YAML, found at
``OMNIRET_CONFIG`` or ``$OMNIRET_HOME/config.toml``. Importing this module reads nothing; call
``get_settings()`` (or build ``Settings(...)``) at startup and pass it down.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from omniret.errors import ConfigError


def default_home() -> Path:
    return Path(os.environ.get("OMNIRET_HOME", "~/.omniret")).expanduser()


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the config file (TOML or YAML) named by ``OMNIRET_CONFIG`` or found in the home folder."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        explicit = os.environ.get("OMNIRET_CONFIG")
        path = Path(explicit).expanduser() if explicit else default_home() / "config.toml"
        if not path.exists():
            if explicit:
                raise ConfigError(f"OMNIRET_CONFIG={explicit}: no such file")
            return {}
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in {".yaml", ".yml"}:
                import yaml

                data: Any = yaml.safe_load(text) or {}
            else:
                import importlib

                # tomllib is 3.11+; on 3.10 its twin tomli (a dependency there) reads the same files
                toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
                data = toml.loads(text)
        except Exception as e:  # noqa: BLE001 - any parse error is the user's file
            raise ConfigError(f"config file {path}: cannot parse ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a table of settings, got {type(data).__name__}")
        table = cast(dict[str, Any], data)
        table = table.get("omniret", table)
        return {str(k).lower(): v for k, v in table.items()}


class Settings(BaseSettings):
    """All of omniret's settings. Environment variables are the field names upper-cased with ``OMNIRET_``."""

    model_config = SettingsConfigDict(env_prefix="OMNIRET_", extra="ignore", validate_default=True)

    home: Path = Field(default_factory=default_home, description="Where collections and caches live.")
    embed_model: str = Field(default="Qwen/Qwen3-VL-Embedding-2B", description="Default embedding model (name or path).")
    rerank_model: str | None = Field(default="Qwen/Qwen3-VL-Reranker-2B", description="Default reranker; empty for none.")
    device: str | None = Field(default=None, description="torch device; default cuda when available, else cpu.")
    dtype: str | None = Field(default=None, description="torch dtype; default bfloat16 on GPU, float32 on CPU.")
    max_batch_tokens: int = Field(default=16384, gt=0, description="Token budget of one model batch.")
    max_batch_items: int = Field(default=64, gt=0, description="Most items in one model batch.")
    media_workers: int = Field(default=4, ge=0, description="Threads decoding images/video beside the model.")
    allow_remote_urls: bool = Field(default=False, description="Fetch http(s) media URLs (off: SSRF safety).")
    debug: bool = Field(default=False, description="Show tracebacks in the CLI.")

    # Service (omniret serve)
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty means no auth.")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_items_per_request: int = Field(default=256, gt=0)
    max_image_pixels: int = Field(default=64 * 1024 * 1024, gt=0, description="Refuse larger images (decompression bombs).")
    max_video_seconds: float = Field(default=600.0, gt=0)
    allow_local_paths: bool = Field(default=False, description="Let API requests name server-side files.")
    batch_wait_ms: float = Field(default=5.0, ge=0, description="Micro-batching: longest wait to fill a batch.")
    micro_batching: bool = True
    collections_root: Path | None = Field(default=None, description="Collections folder served by the API "
                                                            "(default: home/collections).")
    qdrant_url: str | None = Field(default=None, description="Qdrant server for collections the API creates with "
                                                     "backend 'qdrant' (default: embedded local mode).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    @property
    def collections_dir(self) -> Path:
        return Path(self.home).expanduser() / "collections"


def get_settings(**overrides: Any) -> Settings:
    """Build the settings now (reads the environment and the config file)."""
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except Exception as e:  # pydantic's ValidationError names the field
        raise ConfigError(f"invalid settings: {e}") from e
