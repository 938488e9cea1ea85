import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests are small; one thread keeps them quick and deterministic on a shared 2-core box

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


TINY_SUITE = """\
name: tiny
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 4, n_train: 200, n_val: 100, n_test: 100, noise: 0.4}
train: {epochs: 2, batch_size: 64, seeds: [0, 1]}
measure:
  device: cpu
  latency: {batch_sizes: [1, 8], max_time_s: 0.01, min_samples: 3, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [4, [4, 4, 6]]
  rank: [1, 2]
methods:
  - method: tfn
  - method: lmf
  - method: late
"""


def run_cli(*args: str, cwd: Path | None = None):
    """Run `python -m mmbench ARGS` in a subprocess (the real entry point: exit codes, stderr)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "mmbench", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
