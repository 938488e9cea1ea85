"""The CPU cost columns tell the truth: live-tensor memory against hand-made byte counts, each peak in its own scope,
contention evidence carried into the row, the FLOP breakdown summing to the whole, the thread count recorded."""
import math

import pytest
import torch
from torch import nn

from mmbench import measure, methods
from mmbench.measure import contention
from mmbench.measure.memory import LiveBytes
from mmbench.model import FusionModel
from tests.conftest import TINY_SUITE

F32 = 4


def _mib(n_bytes: int) -> float:
    return n_bytes / 2**20


def test_forward_peak_is_weights_inputs_and_output_of_a_linear():
    lin, x = nn.Linear(256, 128), torch.randn(64, 256)
    with torch.no_grad():
        mem = measure.peak_memory(lambda: lin(x), "cpu", alive=[*lin.parameters(), x])
    weights, inputs, output = (256 * 128 + 128) * F32, 64 * 256 * F32, 64 * 128 * F32
    assert mem["mem_measure"] == "cpu_live_tensors"
    assert mem["peak_mem_mib"] == pytest.approx(_mib(output))
    assert mem["peak_alloc_mib"] == pytest.approx(_mib(weights + inputs + output))


def test_tfn_forward_peak_matches_the_hand_count():
    """Contracted TFN (split 1 at this shape): alive at the peak are the three x̃ = [x; 1], z = x̃_2 ⊗ x̃_3
    (B, D2·D3) and h = z W (B, o·D1), besides weights and inputs."""
    dims, o, b = (8, 6, 10), 3, 32
    tfn = methods.create("tfn", list(dims), o)
    assert tfn.contracts and tfn.split == 1
    xs = [torch.randn(b, d) for d in dims]
    d1, d2, d3 = (d + 1 for d in dims)
    with torch.no_grad():
        mem = measure.peak_memory(lambda: tfn(xs), "cpu", alive=[*tfn.parameters(), *xs])
    own = F32 * b * (d1 + d2 + d3 + d2 * d3 + o * d1)
    weights = F32 * tfn.expected_params()
    assert mem["peak_mem_mib"] == pytest.approx(_mib(own))
    assert mem["peak_alloc_mib"] == pytest.approx(_mib(weights + F32 * b * sum(dims) + own))


def test_training_step_peak_holds_gradients_and_optimizer_state_created_inside():
    """SGD with momentum: the step creates a gradient and a momentum buffer per parameter; both stay alive."""
    lin, x, y = nn.Linear(64, 32), torch.randn(16, 64), torch.randn(16, 32)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    p_bytes = (64 * 32 + 32) * F32

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(lin(x), y).backward()
        opt.step()

    mem = measure.peak_memory(step, "cpu", alive=[*lin.parameters(), x, y])
    assert mem["peak_mem_mib"] >= _mib(2 * p_bytes)  # gradients + momentum, at least
    assert mem["peak_mem_mib"] <= _mib(2 * p_bytes + 6 * 16 * 32 * F32 + p_bytes)  # + activations, one temporary
    step()  # now grads and momentum exist: a second scope that names them as alive sees them in its base only
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    again = measure.peak_memory(step, "cpu", alive=[*lin.parameters(), *[p.grad for p in lin.parameters()], *state,
                                                    x, y])
    assert again["peak_alloc_mib"] >= _mib(3 * p_bytes)
    assert again["peak_mem_mib"] < mem["peak_mem_mib"]


def test_tracker_ignores_what_is_alive_outside_its_scope_and_counts_frees():
    unrelated = torch.randn(1024, 1024)  # 4 MiB alive in the process: not the scope's
    with LiveBytes([]) as t:
        a = torch.ones(1000)  # 4000 B
        v = a.view(10, 100)   # a view: nothing allocated
        unrelated.add_(1)     # in place on a tensor outside the scope: nothing allocated
        u = unrelated[:10]    # a view of it: nothing allocated
        del a, v
        b = torch.ones(500)
    assert t.peak == 4000 and t.live == 2000 and t.base == 0
    del u, b


def test_peak_memory_of_batch_1_does_not_depend_on_other_batch_sizes(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    rows = {}
    for sizes in ("[1]", "[1, 64]"):
        text = TINY_SUITE.replace("batch_sizes: [1, 8]", f"batch_sizes: {sizes}").replace("  rank: [1, 2]", "  rank: [2]")
        run = run_suite(prepare(load_suite(write_suite(text))), tmp_path / sizes.strip("[]").replace(", ", "_"))
        rows[sizes] = {(r["label"], r["dims"]): r for r in run.rows()}  # batch sizes are in the trial id
    assert rows["[1]"].keys() == rows["[1, 64]"].keys()
    for tid, r in rows["[1]"].items():
        other = rows["[1, 64]"][tid]
        for col in ("peak_alloc_mib_b1", "peak_mem_mib_b1", "train_peak_alloc_mib_b1", "train_peak_mem_mib_b1"):
            assert r[col] is not None and r[col] > 0, (r["label"], col)
            assert r[col] == other[col], (r["label"], col)
        assert r["mem_measure"] == "cpu_live_tensors"
        assert other["peak_alloc_mib_b64"] > r["peak_alloc_mib_b1"]


def _model(name: str):
    info = methods.info(name)
    m = info.min_modalities if info.max_modalities == info.min_modalities else max(info.min_modalities, 3)
    dims, inputs = [5, 7, 6, 4][:m] if m <= 4 else [4] * m, [3, 9, 2, 5][:m] if m <= 4 else [3] * m
    lengths = [3 + i for i in range(m)] if info.inputs == "sequences" else [None] * m
    torch.manual_seed(0)
    model = FusionModel(inputs, methods.create(name, dims, 3), dims).eval()
    xs = [torch.randn(1, i) if t is None else torch.randn(1, t, i) for i, t in zip(inputs, lengths)]
    enc = sum(2 * (t or 1) * i * d for i, d, t in zip(inputs, dims, lengths))
    return model, xs, enc


@pytest.mark.parametrize("name", methods.available())
def test_flop_breakdown_sums_to_the_whole_model(name):
    model, xs, encoder_closed_form = _model(name)
    counts = measure.flops(lambda: model(xs), model, parts=("fusion", "encoders"))
    assert counts["encoders"] == encoder_closed_form
    assert counts["fusion"] > 0 or name == "mcb"
    assert counts["total"] == counts["encoders"] + counts["fusion"]  # nothing runs outside them: head 0


def test_contention_evidence_decides_the_flag():
    quiet = contention.RegionEvidence(wall_s=1.0, process_cpu_s=1.9, thread_cpu_s=0.99, run_delay_s=0.004, threads=2)
    hogged = contention.RegionEvidence(wall_s=1.0, process_cpu_s=1.2, thread_cpu_s=0.6, run_delay_s=0.8, threads=2)
    assert not quiet.contended and hogged.contended
    assert quiet.cpu_util == pytest.approx(0.95) and hogged.wait_fraction == pytest.approx(0.4)
    no_schedstat = contention.RegionEvidence(wall_s=1.0, process_cpu_s=0.5, thread_cpu_s=0.5, run_delay_s=None,
                                            threads=1)
    assert no_schedstat.contended  # the timing thread ran half the time: starved
    pooled = contention.RegionEvidence.pooled([quiet, hogged])
    assert pooled.wall_s == 2.0 and pooled.wait_fraction == pytest.approx(0.804 / 4)


def test_run_queue_delay_is_read_on_linux():
    delay = contention._run_delay_ns()
    if delay is None:
        pytest.skip("no /proc/self/task/*/schedstat here")
    assert isinstance(delay, int) and delay >= 0
    load = contention.system_load()
    assert load["runnable_procs"] >= 1 and load["load_avg_1m"] >= 0


class _Starved(contention.CpuProbe):
    """A probe that reports every region as 60 % spent waiting for a CPU."""

    def stop(self, token):
        real = super().stop(token)
        return contention.RegionEvidence(real.wall_s, real.process_cpu_s, real.thread_cpu_s,
                                         0.6 * real.wall_s * self.threads, self.threads)


def test_rounds_and_contention_reach_the_row(write_suite, tmp_path, monkeypatch):
    import importlib

    latency_mod = importlib.import_module("mmbench.measure.latency")  # the package's `latency` is the function
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = TINY_SUITE.replace("  rank: [1, 2]", "  rank: [2]").replace("min_block_ms: 0.1}", "min_block_ms: 0.1, rounds: 3}")
    quiet = run_suite(prepare(load_suite(write_suite(text))), tmp_path / "quiet")
    monkeypatch.setattr(latency_mod, "CpuProbe", _Starved)
    starved = run_suite(prepare(load_suite(write_suite(text))), tmp_path / "starved")
    for r in starved.rows():
        assert r["contended"] and r["latency_contended_b8"] and r["train_step_contended_b1"]
        assert r["latency_wait_b8"] == pytest.approx(0.6) and "waited 60%" in r["contended_why"]
    raw = quiet.samples()
    for r in quiet.rows():
        assert 0 < r["latency_cpu_util_b8"] and r["load_avg_1m"] is not None and r["runnable_procs"] >= 1
        kept, out = raw[r["trial_id"]]["latency_rounds_ms_b8"], raw[r["trial_id"]]["latency_slow_rounds_ms_b8"]
        # 3 rounds, some perhaps left out beside a slow host reading (and made up for): every one is accounted for
        assert len(kept) >= 1 and len(kept) + len(out) >= 3 and r["latency_slow_rounds_b8"] == len(out)
        # a reading between every two rounds: per batch size, two units of 3 rounds (the forward sampled together
        # with its stages, and the training step)
        assert len(raw[r["trial_id"]]["host_ref_rounds_ms"]) >= 1 + 3 * 2 * 2 and r["host_ref_ms"] > 0
        assert r["threads"] == torch.get_num_threads() or r["threads"] >= 1


def test_threads_are_resolved_once_recorded_and_not_part_of_the_id(monkeypatch, write_suite):
    from mmbench import plan
    from mmbench.measure import contention as c
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    monkeypatch.setattr(c, "free_cores", lambda window_s=0.2: (1, "2 physical cores, 1.00 busy with other processes"))
    assert plan.resolve_threads(None, "cpu") == (1, [])
    threads, warnings = plan.resolve_threads(2, "cpu")
    assert threads == 2 and len(warnings) == 1 and "can give a trial 1" in warnings[0]
    assert plan.resolve_threads(None, "cuda") == (None, [])
    auto = prepare(load_suite(write_suite(TINY_SUITE)))
    assert auto.threads == 1 and {t.threads for t in auto.trials} == {1} and auto.warnings == ()
    fixed = prepare(load_suite(write_suite(TINY_SUITE.replace("device: cpu", "device: cpu\n  threads: 2"))))
    assert fixed.threads == 2 and fixed.warnings
    t = auto.trials[0]
    from dataclasses import replace
    assert replace(t, threads=7).id == t.id and "threads" not in t.config()
    assert plan.Trial.from_dict(t.to_dict()).threads == 1


def test_row_records_the_threads_it_ran_with(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = TINY_SUITE.replace("device: cpu", "device: cpu\n  threads: 1").replace("  rank: [1, 2]", "  rank: [1]")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rows = run_suite(prepare(load_suite(write_suite(text))), tmp_path).rows()
    finally:
        torch.set_num_threads(before)
    assert {r["threads"] for r in rows} == {1} and {r["threads_requested"] for r in rows} == {1}
    assert math.isfinite(rows[0]["latency_ms_b1"])


class _CountingProbe:
    """Stands in for GpuProbe: says the second round it saw was throttled, with one co-tenant."""

    def __init__(self):
        self.n = 0

    def start(self):
        self.n += 1
        return self.n

    def stop(self, token):
        return {"throttled": token == 2, "co_tenants": 1 if token == 2 else 0}


def test_every_round_is_probed_and_folded_into_row_flags():
    from mmbench.measure import gpu_state

    probe, x = _CountingProbe(), torch.randn(4, 4)
    stats = measure.latency_rounds({("latency", 1): (lambda: x @ x, None), ("train_step", 1): (lambda: x + x, None)},
                                   rounds=3, warmup=0, min_samples=2, max_samples=6, max_time_s=0.05,
                                   min_block_ms=0.01, probes=(probe,))
    assert probe.n == 6 and all(len(st.probes) == 3 and len(st.rounds_ms) == 3 for st in stats.values())
    row = gpu_state.fold({k: list(st.probes) for k, st in stats.items()})
    # rounds interleave: latency's rounds were probes 1, 3, 5 and train_step's 2, 4, 6
    assert row["latency_throttled_b1"] is False and row["train_step_throttled_b1"] is True
    assert row["train_step_co_tenants_b1"] == 1 and row["throttled"] is True
