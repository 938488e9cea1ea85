"""Scaling laws (scaling.py): fits against each method's own size variable (sizes.py), leave-one-out error,
crossovers along the modality dim."""
import math

import numpy as np
import pytest

from mmbench import scaling, sizes
from mmbench.report.tables import tagged_rows
from mmbench.store import load_runs
from tests.fakerun import make_run, trials


def test_size_variables_are_each_methods_closed_form_leading_term():
    assert sizes.size_of({"method": "tfn", "dims": "8x8x16"}) == 9 * 9 * 17
    assert sizes.size_of({"method": "lmf", "dims": "8x8x16", "rank": 4}) == 4 * (9 + 9 + 17)
    assert sizes.size_of({"method": "lmf", "dims": "8x8x16", "hparams": {"rank": 2}}) == 2 * 35
    assert sizes.size_of({"method": "early", "dims": "8x8x16"}) == 32 == sizes.size_of({"method": "late", "dims": "8x8x16"})
    # a method without an entry: its fusion FLOPs; none known: no size (never 0)
    assert sizes.size_of({"method": "mfb", "dims": "8x8", "fusion_flops": 1234}) == 1234
    assert sizes.size_of({"method": "mfb", "dims": "8x8"}) is None and sizes.name_of("mfb") == sizes.FALLBACK
    assert sizes.size_of({"method": "tfn", "dims": "garbage"}) is None


@pytest.mark.parametrize("c", [0.0, 0.05])
def test_a_known_law_is_recovered_with_its_exponent_inside_the_interval(c):
    rng = np.random.default_rng(0)
    s = np.geomspace(10, 1e5, 9)
    y = c + 2e-4 * s ** 0.8 * rng.lognormal(0, 0.03, len(s))
    law, loo = scaling.fit_points(np.log(s), y)
    k, lo, hi = law.exponent
    assert lo <= 0.8 <= hi and hi - lo < 0.2
    assert law.model == ("power" if c == 0 else "overhead + power")
    assert loo < 0.1
    if c:
        assert abs(law.overhead - c) < 0.2 * c


def test_too_few_sizes_give_no_fit_rather_than_a_line_through_two_points():
    assert scaling.fit_points(np.log([10.0, 100.0]), np.array([1.0, 2.0])) is None


def test_fits_on_a_run_use_each_methods_size_and_leave_flagged_timings_out(tmp_path):
    specs = trials(methods=("tfn", "lmf"), dims=(4, 6, 8, 12, 16), ranks=(1, 4))
    contended = {s["trial_id"] for s in specs if s["method"] == "tfn" and s["d"] == 16}
    rows = tagged_rows(load_runs([make_run(tmp_path, "a", specs=specs, contended=contended)]))
    fits = {(f.group, f.cost): f for f in scaling.fit_rows(rows)}
    # the fake run's latency is ∝ sqrt(fusion params), and fusion params ∝ Π(d+1) (tfn), ≈ r·Σ(d+1) (lmf)
    for group in ("tfn", "lmf"):
        f = fits[(group, "latency_ms_b16")]
        k, lo, hi = f.exponent
        assert abs(k - 0.5) < 0.05 and lo < k < hi and f.loo < 0.1
    tfn = fits[("tfn", "latency_ms_b16")]
    assert tfn.size_name == "Π(d_m+1)" and len(tfn.sizes) == 4 and tfn.n_flagged == 0  # 16³ (contended) left out
    assert fits[("lmf", "latency_ms_b16")].size_name == "r·Σ(d_m+1)" and len(fits[("lmf", "latency_ms_b16")].sizes) == 10
    # a prediction carries its interval around the estimate
    est, lo, hi = tfn.predict(17 ** 3)
    assert lo < est < hi


def _row(method, d, lat, rank=None):
    return {"task": "t", "_run": "r", "_key": method if rank is None else f"{method}(rank={rank})",
            "label": method, "method": method, "dims": f"{d}x{d}x{d}", "rank": rank, "status": "ok",
            "latency_ms_b8": lat}


def test_crossover_between_two_methods_lies_where_the_laws_cross_with_its_interval():
    rng = np.random.default_rng(1)
    ds = (4, 6, 8, 12, 16, 24, 32)
    tfn = lambda d: 1e-4 * (d + 1) ** 3  # noqa: E731
    lmf = lambda d: 2e-3 * 4 * 3 * (d + 1)  # noqa: E731
    rows = [_row("tfn", d, tfn(d) * rng.lognormal(0, 0.02)) for d in ds]
    rows += [_row("lmf", d, lmf(d) * rng.lognormal(0, 0.02), rank=4) for d in ds]
    xs = scaling.crossovers(rows, scaling.fit_rows(rows))
    assert len(xs) == 1
    x = xs[0]
    true = math.sqrt(2e-3 * 12 / 1e-4) - 1  # (d+1)² = 240
    assert x.found and abs(x.at - true) / true < 0.05 and x.interval[0] <= true <= x.interval[1]
    assert x.cheaper_below == "tfn" and "tfn cheaper below, lmf(rank=4) above" in x.text


def test_no_crossover_in_the_range_run_says_so():
    ds = (4, 8, 16, 32)
    rows = [_row("tfn", d, 1e-3 * (d + 1) ** 3) for d in ds] + [_row("early", d, 1e-4 * 3 * d) for d in ds]
    (x,) = scaling.crossovers(rows, scaling.fit_rows(rows))
    assert x.at is None and not x.found
    assert x.text == "never in the range run (dims 4–32): early cheaper throughout"


def test_reports_fits_and_frames_need_no_torch(tmp_path):
    import subprocess
    import sys

    run = make_run(tmp_path, "a")
    code = (f"import sys, mmbench; from mmbench.report import make_report; make_report([{str(run)!r}], 'html'); "
            f"mmbench.load_run({str(run)!r}).frame(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(tmp_path), env={**__import__("os").environ})
    assert out.stdout.strip() == "False"


def test_a_run_merged_across_devices_shows_each_devices_crossover(tmp_path):
    specs = trials(methods=("tfn", "lmf"), dims=(4, 6, 8, 12, 16), ranks=(16,))
    cpu = make_run(tmp_path, "cpu", specs=specs)
    # on the other device LMF is 1.5× slower: its crossover with TFN moves to larger dims
    gpu = make_run(tmp_path, "gpu", specs=specs, env={"device": "cuda"}, seed=1,
                   slow={s["trial_id"]: 1.5 for s in specs if s["method"] == "lmf"})
    rows = tagged_rows(load_runs([cpu, gpu]))
    xs = [x for x in scaling.crossovers(rows, scaling.fit_rows(rows)) if x.cost == "latency_ms_b16"]
    by_run = {x.run: x for x in xs}
    assert set(by_run) == {"cpu", "cuda"} and all(x.found for x in xs)
    # the fake's latency ∝ sqrt(fusion params): 2(d+1)³ (tfn) against 6·16·(d+1)+18 (lmf, rank 16)
    true_cpu = next(d for d in np.linspace(4, 16, 12001) if 2 * (d + 1) ** 3 >= 96 * (d + 1) + 18)
    assert abs(by_run["cpu"].at - true_cpu) < 0.1 * true_cpu and by_run["cuda"].at > by_run["cpu"].at
    from mmbench.report import make_report

    html = make_report([cpu, gpu], "html", tmp_path / "both.html").read_text()
    import re

    table = re.search(r'<table class="crossovers">(.*?)</table>', html, flags=re.S).group(1)
    assert "lmf(rank=16) · cpu vs tfn · cpu" in table and "lmf(rank=16) · cuda vs tfn · cuda" in table


def _bent_pair(noise: float, seed: int = 3) -> list[dict]:
    """TFN: a fixed 0.4 ms, then its product growth; LMF (rank 4): a flat 0.5 ms. Their costs cross at
    (d+1)³ = 10⁴, d ≈ 20.5; below it TFN is 20% cheaper, which ``noise`` (lognormal σ) may or may not hide."""
    rng = np.random.default_rng(seed)
    ds = (8, 12, 16, 24, 32, 48, 64)
    rows = [_row("tfn", d, (0.4 + 1e-5 * (d + 1) ** 3) * rng.lognormal(0, noise)) for d in ds]
    return rows + [_row("lmf", d, 0.5 * rng.lognormal(0, noise), rank=4) for d in ds]


def test_a_crossover_is_told_apart_on_both_sides_or_not_called_one():
    (x,) = scaling.crossovers(rows := _bent_pair(0.01), scaling.fit_rows(rows))
    assert x.found and abs(x.at - 20.5) < 2 and x.cheaper_below == "tfn"
    # the same laws under noise that hides TFN's 20% lead below the crossover: LMF is told cheaper above it only
    (x,) = scaling.crossovers(rows := _bent_pair(0.2), scaling.fit_rows(rows))
    assert x.at is not None and x.interval[0] <= x.lo_d < x.interval[1] < x.hi_d
    assert not x.found
    assert x.text.startswith("no crossover told apart (dims 8–64): lmf(rank=4) cheaper above d ≈ ")
    assert "below, the two are not told apart" in x.text


def test_a_crossover_the_measured_rows_contradict_is_not_called_one():
    """TFN measured dearer than LMF at every size run, but its three smallest timings are flagged: its law, fitted on
    the four clean ones (d 24-64), crosses LMF's near d 20 with TFN "cheaper below", where no measurement says so."""
    ds = (8, 12, 16, 24, 32, 48, 64)
    rows = [_row("tfn", d, 0.55 if d < 24 else 0.4 + 1e-5 * (d + 1) ** 3) for d in ds]
    for r in rows[:3]:
        r["latency_noisy_b8"] = True
    rows += [_row("lmf", d, 0.5, rank=4) for d in ds]
    fits = scaling.fit_rows(rows)
    assert len(next(f for f in fits if f.group == "tfn").sizes) == 4  # the flagged points left out of TFN's law
    (x,) = scaling.crossovers(rows, fits)
    assert x.at is not None and x.cheaper_below == "tfn" and x.lo_d < x.at < 24
    assert not x.borne_out and not x.found and x.text.startswith("not borne out by the measured points")
    # the same rows unflagged: TFN's law follows its points, and nothing crosses where the rows do not
    for r in rows[:3]:
        r["latency_noisy_b8"] = False
    assert not any(x.found for x in scaling.crossovers(rows, scaling.fit_rows(rows)))
