"""Access to the real vendor evidence in ../shared/vectors (see its MANIFEST.md).

CI clones the project with `shared/` beside it, so the vectors live at `<repo>/../shared/vectors`.
`ACMEDA_VECTORS` overrides the location.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from attestation.roots import pem_certificates

VECTORS = Path(os.environ.get("ACMEDA_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))


def path(relative: str) -> Path:
    return VECTORS / relative


def read(relative: str) -> bytes:
    return path(relative).read_bytes()


def pem_chain(relative: str) -> list[bytes]:
    return pem_certificates(read(relative))


@lru_cache(maxsize=1)
def manifest() -> list[dict[str, Any]]:
    return json.loads(read("manifest.json"))


def entry(relative: str) -> dict[str, Any]:
    for item in manifest():
        if item.get("path") == relative:
            return item
    raise KeyError(relative)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
