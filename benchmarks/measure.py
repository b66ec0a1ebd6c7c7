"""Memory of this process (resident set size, bytes), for the benchmarks' fresh processes.

The peak is the operating system's high-water mark of the whole process (``ru_maxrss``), so a
measurement runs in a process of its own, started for it.
"""

from __future__ import annotations

import os
import sys


def peak_rss() -> int:
    """The process's peak resident set size so far (0 where the platform cannot tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss() -> int:
    """The process's resident set size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
