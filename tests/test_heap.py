"""The heap held still for timings (measure/heap.py): blocks the C library would map afresh, and fault in page by
page on every first touch, come from a heap that keeps what it was given."""
import subprocess
import sys

import pytest

from mmbench.measure import heap

pytestmark = pytest.mark.skipif(heap.hold_for_timing() is None, reason="glibc's mallopt is not available here")

GROWING = """
import ctypes, resource, sys, torch
ctypes.CDLL("libc.so.6").prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: a fault per 4 KiB page, not per huge page
if sys.argv[1] == "held":
    from mmbench.measure import heap
    heap.hold_for_timing()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(1, 41):
    t = torch.ones(i * 65536)  # 256 KiB more each time: a size never freed before
    del t
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", GROWING, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_held_heap_faults_in_only_the_pages_it_grows_by():
    """Unheld, each larger block is mapped afresh above the adapted threshold: all its pages fault in again (40
    blocks of 64..2560 pages: ~52 k faults). Held, the heap keeps the freed block and grows by 64 pages a step."""
    pages = 4096
    grown = 40 * (256 << 10) // pages  # the pages the heap must grow by in all
    every = sum(i * (256 << 10) // pages for i in range(1, 41))  # every block's pages, each faulted in afresh
    unheld, held = _faults("default"), _faults("held")
    assert unheld >= 0.8 * every
    assert held <= 3 * grown < unheld / 5  # (the heap grows in steps of its own: 1-2× what it must)


def test_the_run_says_what_heap_its_timings_ran_under(tmp_path, write_suite):
    import json

    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    suite = write_suite("""\
name: heap
task: {dataset: synthetic, params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32}}
train: {epochs: 1, batch_size: 32, seeds: [0]}
measure: {device: cpu, threads: 1, latency: null, flops: false, memory: false}
sweep: {dims: [4]}
methods: [{method: early}]
""", "heap.yaml")
    run = run_suite(prepare(load_suite(suite)), tmp_path)
    env = json.loads((run.path / "env.json").read_text())
    assert env["heap"] == {"mmap_threshold": heap.TIMING[heap.M_MMAP_THRESHOLD],
                           "trim_threshold": heap.TIMING[heap.M_TRIM_THRESHOLD], "top_pad": heap.TIMING[heap.M_TOP_PAD]}
