"""Parameters and FLOPs as exact closed-form lines through any dims: the method classes' own formulas, evaluated at
run time over a grid of uniform dims (closed_form.py), kept only where they reproduce what the trial counted, and
drawn by the (torch-free) report as lines that pass exactly through the measured counts."""
from __future__ import annotations

import json

import pytest
import torch

from mmbench import closed_form, measure
from mmbench.model import build as build_model
from mmbench.report.build import build
from mmbench.run import prepare, run_suite
from mmbench.suite import load_suite

SUITE = """\
name: lines
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 4, n_train: 60, n_val: 30, n_test: 30}
train: {epochs: 1, batch_size: 32, seeds: [0]}
measure: {device: cpu, threads: 1, accuracy: false, memory: false, latency: null}
sweep:
  dims: [3, 5, [3, 3, 5]]
methods:
  - method: tfn
  - method: lmf
    params: {rank: 2}
  - method: early
  - method: early
    label: early(mlp)
    params: {hidden: 7}
  - method: late
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lines")
    (tmp / "s.yaml").write_text(SUITE)
    return run_suite(prepare(load_suite(tmp / "s.yaml")), tmp / "out")


def _counted(method, hparams, d):
    """What torch counts for a model at uniform dim d (3 modalities of 4 features, 2 classes)."""
    model = build_model(method, hparams, [4, 4, 4], [d] * 3, 2).eval()
    x = [torch.randn(1, 4) for _ in range(3)]
    with torch.inference_mode():
        flops = measure.flops(lambda: model(x), model, parts=("fusion", "encoders"))["fusion"]
    return measure.params(model.fusion), flops


def test_the_curves_hold_each_trial_s_own_counts_and_any_other_d_exactly(run):
    rows = {r["trial_id"]: r for r in run.rows()}
    samples = run.samples()
    assert len(rows) == 15 and {r["status"] for r in rows.values()} == {"ok"}
    for tid, r in rows.items():
        c = samples[tid][closed_form.KEY]
        assert set(c) == {"d", "fusion_params", "fusion_flops"} and c["d"] == sorted(c["d"])
        if r["dims"] in ("3x3x3", "5x5x5"):  # the line passes through the measured count
            i = c["d"].index(int(r["dims"][0]))
            assert (c["fusion_params"][i], c["fusion_flops"][i]) == (r["fusion_params"], r["fusion_flops"])
        if r["dims"] == "3x3x3":  # and through a d that was not run: what torch counts there
            i = c["d"].index(11)
            assert (c["fusion_params"][i], c["fusion_flops"][i]) == _counted(r["method"], r["hparams"], 11)


def test_the_report_draws_the_lines_through_the_measured_counts(run):
    rep = build([run.path])
    for key, col in (("params-vs-dim", "fusion_params"), ("flops-vs-dim", "fusion_flops")):
        fig = next(p.fig for p in rep.plots if p.key == key)
        ax = fig.axes[0]
        lines = {}
        for ln in ax.lines:
            if str(ln.get_gid()).startswith("closed-form "):
                lines.setdefault(ln.get_gid()[len("closed-form "):], {}).update(
                    (x, y) for x, y in zip(ln.get_xdata(), ln.get_ydata()) if x == x)  # not the NaN break
        assert set(lines) == {"tfn", "lmf(rank=2)", "early", "early(mlp)", "late"}
        for r in rep.rows:
            if r["dims"] in ("3x3x3", "5x5x5"):
                assert lines[r["_key"]][int(r["dims"][0])] == r[col]  # exactly on the line
        assert all(min(v) <= 2 and max(v) >= 8 for v in map(dict.keys, lines.values()))  # beyond the dims run
        marked = {ln.get_gid(): [ln.get_xdata()[i] for i in ln.get_markevery()] for ln in ax.lines
                  if ln.get_markevery() is not None}
        assert all(sorted(v) == [3, 5] for v in marked.values()) and len(marked) == 5  # the measured points
        assert "1 row(s) with unequal dims" not in ax.get_xlabel()  # 5 of them, named
        assert "5 row(s) with unequal dims" in ax.get_xlabel()


def test_no_curve_where_the_closed_form_is_not_what_was_counted():
    class Fake:
        def expected_params(self):
            return 10

        def expected_flops(self, batch):
            return None

    assert closed_form.curves(Fake(), "early", {}, 2, 2, {"fusion_params": 11, "dims": "3x3"}) is None
    c = closed_form.curves(Fake(), "early", {}, 2, 2, {"fusion_params": 10, "dims": "3x3"})
    assert set(c) == {"d", "fusion_params"}  # a flops count it cannot reproduce is left out, the params kept
    assert c["fusion_params"][c["d"].index(3)] == (3 + 3 + 1) * 2  # the class's own formula (not the fake's)
