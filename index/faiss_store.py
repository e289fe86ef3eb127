"""The old import path of ``FaissStore``: the same module as ``omniret.index.faiss.store``.

Kept so code written against ``omniret.index.faiss_store`` keeps working, module attributes included;
new code imports ``omniret.index.faiss`` (or ``FaissStore`` from ``omniret.index``).
"""

from __future__ import annotations

import sys

from omniret.index.faiss import store

sys.modules[__name__] = store
