"""``Settings``: every knob omniret reads, from init arguments, ``OMNIRET_*`` variables and a config file.

Precedence is init > environment > config file > defaults. The config file is TOML or YAML, found at
``OMNIRET_CONFIG`` or ``$OMNIRET_HOME/config.toml``; a key it does not know is refused (a typo would
otherwise be dropped silently). ``OMNIRET_API_KEY`` (one key, the name most users type) is an alias of
``OMNIRET_API_KEYS``. Importing this module reads nothing; the edges (the CLI, the app factory) call
``get_settings()`` (or build ``Settings(...)``) once and pass it down; library code reads no settings.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal, cast

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
                data = _toml_loads(text)
        except Exception as e:  # noqa: BLE001 - any parse error is the user's file
            raise ConfigError(f"config file {path}: cannot parse ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a table of settings, got {type(data).__name__}")
        table: Any = cast(dict[str, Any], data).get("omniret", data)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [omniret] must be a table of settings")
        out = {str(k).lower(): v for k, v in cast(dict[Any, Any], table).items()}
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(out) - known)
        if unknown:
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, n=1)) else repr(k)
                     for k in unknown]
            raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(hints)}; known: "
                              f"{', '.join(sorted(known))}")
        return out


def _toml_loads(text: str) -> dict[str, Any]:
    """TOML with the standard library on Python 3.11+, the ``tomli`` backport (a dependency there) on 3.10."""
    import importlib

    # imported by name: a type check on 3.10 rules need not have the backport installed to read this
    toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    data: dict[str, Any] = toml.loads(text)
    return data


class _ApiKeyAliasSource(PydanticBaseSettingsSource):
    """``OMNIRET_API_KEY``: one key (or a JSON list), the singular that compose files and users type.

    Ignoring it would run the server without auth while its operator believes otherwise; setting it beside
    a different ``OMNIRET_API_KEYS`` is refused rather than guessed.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        raw = os.environ.get("OMNIRET_API_KEY")
        if raw is None or not raw.strip():
            return {}
        keys = _key_list(raw, "OMNIRET_API_KEY")
        plural = os.environ.get("OMNIRET_API_KEYS")
        if plural is not None and plural.strip() and set(_key_list(plural, "OMNIRET_API_KEYS")) != set(keys):
            raise ConfigError("OMNIRET_API_KEY and OMNIRET_API_KEYS are both set, to different keys; set one "
                              "(OMNIRET_API_KEYS takes a JSON list)")
        return {"api_keys": keys}


def _key_list(raw: str, name: str) -> list[str]:
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{name}: not a JSON list of keys ({e})") from e
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a JSON list of non-empty strings")
        keys = cast(list[Any], value)
        if not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(f"{name}: expected a JSON list of non-empty strings")
        return [str(k) for k in keys]
    return [text]


def is_loopback(host: str) -> bool:
    """True for an interface only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Settings(BaseSettings):
    """All of omniret's settings. Environment variables are the field names upper-cased with ``OMNIRET_``."""

    model_config = SettingsConfigDict(env_prefix="OMNIRET_", extra="ignore", validate_default=True)

    home: Path = Field(default_factory=default_home, description="Where collections and caches live.")
    embed_model: str = Field(default="Qwen/Qwen3-VL-Embedding-2B", description="Default embedding model (name or path).")
    rerank_model: str | None = Field(default="Qwen/Qwen3-VL-Reranker-2B", description="Default reranker; empty for none.")
    device: str | None = Field(default=None, description="torch device; default cuda when available, else cpu.")
    dtype: str | None = Field(default=None, description="torch dtype; default bfloat16 on GPU, float32 on CPU.")
    devices: str | None = Field(default=None, description="Serve one embedding model replica per device (auto, "
                                                          "cuda:0,cuda:1, cpu,cpu) behind the micro-batcher.")
    backend: Literal["torch", "onnx", "openvino", "auto"] = Field(
        default="torch", description="Inference backend of sentence-transformers models (embedders, CrossEncoders): "
                                     "torch, onnx (ONNX Runtime), openvino, or auto (onnx where the model and the "
                                     "installed extras allow, else torch). Qwen models run on torch.")
    quantize: Literal["int8"] | None = Field(default=None, description="int8: dynamic int8 quantization on the onnx "
                                                                       "backend (faster, cosine ~0.99 to float32).")
    threads: int | None = Field(default=None, gt=0, description="Intra-op CPU threads of the model (default: the "
                                                                "CPUs this process may use, cgroup quota included).")
    export_dir: Path | None = Field(default=None, description="Cache of exported onnx/openvino models (default: "
                                                              "beside a writable checkpoint, else home/exports).")
    max_batch_tokens: int = Field(default=16384, gt=0, description="Token budget of one model batch.")
    max_batch_items: int = Field(default=64, gt=0, description="Most items in one model batch.")
    allow_remote_urls: bool = Field(default=False, description="Fetch http(s) media URLs (off: SSRF safety).")
    debug: bool = Field(default=False, description="Show tracebacks in the CLI (OMNIRET_DEBUG=1).")

    # Service (omniret serve)
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty means no auth "
                                                                  "(OMNIRET_API_KEY=one-key is an alias).")
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins allowed to call the API "
                                                                      "(CORS, e.g. [\"https://app.example\"]); "
                                                                      "empty: off.")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_items_per_request: int = Field(default=256, gt=0)
    max_image_pixels: int = Field(default=64 * 1024 * 1024, gt=0, description="Refuse larger images (decompression bombs).")
    max_video_seconds: float = Field(default=600.0, gt=0)
    max_text_chars: int = Field(default=100_000, gt=0, description="Longest text per item, in characters (400 above "
                                                           "it; text is cut to what the model reads first).")
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
        return init_settings, env_settings, _ApiKeyAliasSource(settings_cls), _ConfigFileSource(settings_cls)

    @property
    def collections_dir(self) -> Path:
        return Path(self.home).expanduser() / "collections"

    @property
    def collections_path(self) -> Path:
        """The collections folder in use: ``collections_root`` when set, else ``home/collections``."""
        return Path(self.collections_root).expanduser() if self.collections_root else self.collections_dir

    def model_options(self) -> dict[str, Any]:
        """The backend options every model loader takes (``load_embedder(..., **settings.model_options())``)."""
        out: dict[str, Any] = {"backend": self.backend, "quantize": self.quantize}
        if self.threads is not None:
            out["threads"] = self.threads
        if self.export_dir is not None:
            out["export_dir"] = self.export_dir
        return out

    def exposure_warning(self) -> str | None:
        """A warning when the service listens beyond this machine without any API key, else None."""
        if self.api_keys or is_loopback(self.host):
            return None
        return (f"serving on {self.host} WITHOUT an API key: anyone who can reach port {self.port} can use "
                "the API and change its collections (set --api-key or OMNIRET_API_KEYS)")


def get_settings(**overrides: Any) -> Settings:
    """Build the settings now (reads the environment and the config file)."""
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except Exception as e:  # pydantic's ValidationError names the field
        raise ConfigError(f"invalid settings: {e}") from e
