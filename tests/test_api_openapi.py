"""The API surface matches the committed digest (``api/openapi.json``): changes to it are deliberate."""

from __future__ import annotations

import json

from omniret.api.openapi import SNAPSHOT, current


def test_openapi_digest_matches_the_committed_one() -> None:
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    now = current()
    assert now == committed, "the API surface changed; if on purpose: python -m omniret.api.openapi"
    assert "POST /v1/embeddings" in now and now["POST /v1/embeddings"]["request"]["application/json"][0] == "dimensions"
