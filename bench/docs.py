"""Writing a benchmark's section of docs/performance.md, with the date and the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f"{memory_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown memory"
    return f"{os.cpu_count()} CPUs ({cpu}), {memory}, Linux {platform.release()}, Python {platform.python_version()}"


def stamp() -> str:
    return f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n- Machine: {machine()}\n"


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace `## heading` (up to the next `## `) in `path`, or append it."""
    current = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"^## {re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    body = f"## {heading}\n\n{text.rstrip()}\n\n"
    updated = pattern.sub(lambda _m: body, current, count=1) if pattern.search(current) else current.rstrip("\n") + "\n\n" + body
    path.write_text(updated)
