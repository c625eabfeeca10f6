"""The machine a benchmark ran on, in the words its tables start with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil


def hardware() -> str:
    """The CPU's model name, its vCPUs and the RAM: "AMD EPYC ..., 2 vCPUs, 24 GiB RAM"."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} vCPUs, {memory:.0f} GiB RAM"
