"""What this machine and process are: the CPU's name and flags, package versions, torch's thread count for a block.

Every measurement the project records (benchmark tables, the engine choice cache) names the machine with these.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
from importlib import metadata
from typing import Iterator


@functools.lru_cache(maxsize=1)
def _cpuinfo_fields() -> tuple[str, str]:
    """The first ``model name`` and ``flags`` (``Features`` on Arm) values of /proc/cpuinfo, where it exists (read
    once per process: the machine identity asks for both)."""
    name = flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return name, flags


def cpu_model_name() -> str:
    """The CPU's model name (``AMD EPYC 9R14``), else what the platform module knows."""
    return _cpuinfo_fields()[0] or platform.processor() or platform.machine()


def cpu_flags_digest() -> str:
    """A short digest of the CPU's feature flags: two CPUs with one name can differ in them (AVX-512 enabled or not)."""
    return hashlib.sha256(_cpuinfo_fields()[1].encode()).hexdigest()[:16]


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, None where it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (unchanged for None or 0) inside the block, restored after."""
    import torch  # here: the rest of this module serves torch-free callers too

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
