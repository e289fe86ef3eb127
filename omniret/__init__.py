"""omniret: one vector space for text, images, document pages and video, with two-stage search.

The shared core lives here (types, errors, settings, registry); the parts are subpackages:
``omniret.embed``, ``omniret.rerank``, ``omniret.index``, ``omniret.api``, ``omniret.training``,
``omniret.evaluation``, and the ``omniret`` command, ``omniret.cli``, on top of them all. Importing
``omniret`` reads no files and imports no torch.
"""

from omniret.errors import (
    CollectionError,
    ConfigError,
    DimensionError,
    ItemError,
    ItemFailure,
    ModelLoadError,
    OmniretError,
    StoreError,
)
from omniret.types import Hit, Item

__version__ = "0.1.0"

__all__ = [
    "CollectionError",
    "ConfigError",
    "DimensionError",
    "Hit",
    "Item",
    "ItemError",
    "ItemFailure",
    "ModelLoadError",
    "OmniretError",
    "StoreError",
    "__version__",
]
