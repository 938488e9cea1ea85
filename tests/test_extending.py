"""Where each kind of change goes (ARCHITECTURE.md), held to it: a new fusion method is one decorated class, and
nothing else, from the suite file to the report."""
from __future__ import annotations

import torch
from torch import nn

from mmbench import methods
from mmbench.methods import registry
from mmbench.methods.base import Fusion

SUITE = """\
name: extending
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 120, n_val: 60, n_test: 60}
train: {epochs: 1, batch_size: 64, seeds: [0]}
measure:
  device: cpu
  threads: 1
  latency: {batch_sizes: [1], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [4, 6]
  rank: [1, 3]
methods:
  - method: gated_sum
"""


class GatedSum(Fusion):
    """Gated sum: project each modality to `width` units, gate each with a sigmoid of itself, add, then Linear."""

    def __init__(self, dims, out_dim: int, width: int = 2):
        super().__init__(dims, out_dim)
        self.width = width
        self.proj = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
        self.head = nn.Linear(width, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        hs = [p(x) for p, x in zip(self.proj, xs)]
        return self.head(sum(torch.sigmoid(h) * h for h in hs))

    def expected_params(self) -> int:
        return sum((d + 1) * self.width for d in self.dims) + (self.width + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        return 2 * batch * (sum(self.dims) * self.width + self.width * self.out_dim)


def test_a_new_method_is_one_decorated_class(tmp_path, monkeypatch):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered for this test only
    registry.register_method("gated_sum", family="joint", rank_param="width")(GatedSum)  # the one addition

    assert "gated_sum" in methods.available("gated*")
    assert methods.info("gated_sum").hyperparams == ("width",)
    path = tmp_path / "extending.yaml"
    path.write_text(SUITE)
    prepared = prepare(load_suite(path))
    # the suite's `rank` axis reaches the method's own rank hyperparameter; dims and rank are swept
    assert sorted((t.dims, t.hparams["width"]) for t in prepared.trials) == [
        ((4, 4), 1), ((4, 4), 3), ((6, 6), 1), ((6, 6), 3)]
    run = run_suite(prepared, tmp_path / "out")
    rows = run.rows()
    assert [r["status"] for r in rows] == ["ok"] * 4
    for r in rows:
        d, w = int(r["dims"].split("x")[0]), r["hparams"]["width"]
        module = GatedSum([d, d], 2, width=w)
        assert r["fusion_params"] == module.expected_params()        # counted, and equal to its closed form
        assert r["fusion_flops"] == module.expected_flops(1)
        assert r["latency_ms_b1"] > 0 and r["acc_mean"] is not None  # timed and trained like any other
    md = (run.path / "report.md").read_text()  # the run's report names it, as any other method
    assert "gated_sum(width=3)" in md and "gated_sum(width=1)" in md
