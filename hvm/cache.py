"""Where hvm and its image recipes keep what they build or derive (never inside the checkout)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(override: Path | None = None) -> Path:
    """The cache directory: ``override``, else ``$HVM_CACHE``, else ``~/.cache/hvm``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("HVM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hvm"
