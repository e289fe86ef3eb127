"""The API surface as a small, version-stable digest of the OpenAPI schema (committed as ``openapi.json``).

The digest keeps what clients depend on: every path and method, the request body's fields (required ones
marked ``*``) and the documented status codes. A test compares it with the committed file, so any change
of the surface is deliberate. Regenerate with ``python -m omniret.api.openapi``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("openapi.json")


def digest(schema: dict[str, Any]) -> dict[str, Any]:
    comps = schema.get("components", {}).get("schemas", {})

    def fields(ref: dict[str, Any]) -> list[str]:
        target = ref.get("$ref", "")
        obj = comps.get(target.rsplit("/", 1)[-1], ref) if target else ref
        required = set(obj.get("required", []))
        return sorted(f"{k}*" if k in required else k for k in obj.get("properties", {}))

    out: dict[str, Any] = {}
    for path, ops in sorted(schema.get("paths", {}).items()):
        for method, op in sorted(ops.items()):
            entry: dict[str, Any] = {"responses": sorted(op.get("responses", {}))}
            content = op.get("requestBody", {}).get("content", {})
            for media, spec in sorted(content.items()):
                entry["request"] = {media: fields(spec.get("schema", {}))}
            out[f"{method.upper()} {path}"] = entry
    return out


def current() -> dict[str, Any]:
    from omniret.api.app import create_app
    from omniret.settings import Settings

    return digest(create_app(Settings(rerank_model="")).openapi())


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
