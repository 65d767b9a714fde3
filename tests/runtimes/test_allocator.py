"""cvx2_backbone.runtimes.allocator: freed large blocks are reused instead of page-faulted anew on every call."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_reusing_freed_memory_stops_the_page_faults_of_large_blocks():
    script = (
        "import resource, sys, torch\n"
        "from cvx2_backbone.runtimes import allocator\n"
        "assert allocator.reuse_freed_memory() if sys.argv[1] == 'on' else not allocator.applied()\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    torch.ones(96 * 2**20 // 4)  # 96 MiB, written and freed: above glibc's largest mmap threshold\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(min(faults() for _ in range(6)))\n")  # min: the kernel may reclaim idle heap pages now and then
    counts = {mode: int(subprocess.run([sys.executable, "-c", script, mode], check=True, capture_output=True,
                                       text=True).stdout.split()[-1]) for mode in ("off", "on")}
    assert counts["off"] > 20_000  # every call maps and faults in its 24576 pages anew
    assert counts["on"] < counts["off"] // 100  # a freed block is reused
