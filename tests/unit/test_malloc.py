"""The allocator adapter against the real glibc, in child processes so that the test
runner's own heap and threads do not blur what is measured."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from litelb.adapters.malloc import Allocator

pytestmark = pytest.mark.skipif(
    not Allocator().available, reason="needs glibc (mallopt, malloc_trim)"
)

# Helpers shared by both children: libc's malloc/free and this process's RSS.
PRELUDE = """
import ctypes, re, threading
from litelb.adapters.malloc import Allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_kb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
def arena_heaps():
    # glibc maps each thread arena's heap at an address aligned to its 64 MB maximum.
    count = 0
    for line in open("/proc/self/maps"):
        span, perms = line.split()[:2]
        start = int(span.split("-")[0], 16)
        if perms == "rw-p" and start % (64 << 20) == 0 and len(line.split()) == 5:
            count += 1
    return count
"""


def run_child(body: str) -> str:
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_freed_pages_in_the_middle_of_the_heap_go_back_to_the_kernel() -> None:
    out = run_child(
        """
        blocks = [libc.malloc(4000) for _ in range(8000)]
        for b in blocks[:-1]:  # the last block pins the top: free() alone keeps the rest
            libc.free(b)
        before = rss_kb()
        Allocator().release_free_memory()
        print(before - rss_kb())
        """
    )
    assert int(out) > 20_000  # of the ~31 MB freed, in kB


THREADS_MALLOC = """
start = threading.Barrier(9)
def work():
    block = libc.malloc(1000)
    start.wait()
    start.wait()
    libc.free(block)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
start.wait()
print(arena_heaps())
start.wait()
for t in threads:
    t.join()
"""


def test_eight_allocating_threads_share_at_most_two_arenas() -> None:
    limited = run_child("Allocator().limit_arenas()\n" + THREADS_MALLOC)
    default = run_child(THREADS_MALLOC)
    # The main arena lives in the brk heap; a limit of two leaves one mapped arena.
    assert int(limited) <= 1
    assert int(default) > int(limited)  # the probe does see arenas when there is no limit
