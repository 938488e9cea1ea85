"""The measures, on CPU: latency's adaptive stopping (fake clock), FLOP counting gaps, memory, precision."""
import itertools

import pytest
import torch
from torch import nn

from mmbench import measure
from mmbench.errors import UserError
from mmbench.measure import precision
from tests.conftest import TINY_SUITE, run_cli


class FakeClock:
    """Each call of the timed function advances time by the next value of `durations` (seconds)."""

    def __init__(self, durations):
        self.t, self.durations = 0.0, itertools.cycle(durations)

    def __call__(self):
        return self.t

    def work(self):
        self.t += next(self.durations)


def test_latency_stops_once_spread_is_small():
    clock = FakeClock([0.002])
    stats = measure.latency(clock.work, warmup=0, min_samples=10, max_samples=500, max_time_s=100,
                            min_block_ms=1.0, clock=clock)
    assert stats.n == 10 and stats.calls_per_sample == 1
    assert stats.median_ms == pytest.approx(2.0) and stats.iqr_ms == pytest.approx(0.0) and not stats.noisy


def test_latency_keeps_going_while_noisy_then_flags_it():
    clock = FakeClock([0.001, 0.003])  # alternating: IQR/median stays ~100%
    stats = measure.latency(clock.work, warmup=0, min_samples=5, max_samples=40, max_time_s=100, min_block_ms=0.5,
                            clock=clock)
    assert stats.n == 40 and stats.noisy
    assert stats.p5_ms == pytest.approx(1.0) and stats.p95_ms == pytest.approx(3.0)


def test_a_wide_spread_with_a_pinned_median_is_not_noisy():
    # samples alternating 1 ms / 3 ms spread 100% around their median, yet 1000 of them pin the median to ±5%
    # (1.57·IQR/√n): the spread is the machine's; the flag is about the figure
    clock = FakeClock([0.001, 0.003])
    stats = measure.latency(clock.work, warmup=0, min_samples=5, max_samples=5000, max_time_s=100, min_block_ms=0.5,
                            clock=clock)
    assert stats.rel_iqr > 0.5 and not stats.noisy
    assert 900 < stats.n < 1100 and stats.rel_ci <= 0.05


def test_latency_budget_ends_sampling():
    clock = FakeClock([0.001, 0.003])
    stats = measure.latency(clock.work, warmup=0, min_samples=5, max_samples=10_000, max_time_s=0.05,
                            min_block_ms=0.5, clock=clock)
    assert 5 <= stats.n < 40  # ~2 ms per sample against a 50 ms budget


def test_latency_keeps_sampling_for_min_time_even_when_quiet():
    clock = FakeClock([0.002])
    stats = measure.latency(clock.work, warmup=0, min_samples=10, max_samples=500, max_time_s=100,
                            min_time_s=0.1, min_block_ms=1.0, clock=clock)
    assert stats.n == 51  # the calibration sample, then 50 × 2 ms = 0.1 s


def test_latency_rounds_interleave_the_functions_and_pool_their_samples():
    """A burst of interference (here: every call 10x slower for one stretch of the clock) lands in one round of each
    function, so each pooled median stays at the quiet value; one long stretch per function would not."""
    clock, order, entered = FakeClock([0.0]), [], []

    def make(name, cost):
        def fn():
            order.append(name)
            slow = 0.5 <= clock.t < 0.62  # the burst
            clock.t += cost * (10 if slow else 1)
        return fn

    def ctx():
        import contextlib
        entered.append(1)
        return contextlib.nullcontext()

    fns = {"a": (make("a", 0.002), ctx), "b": (make("b", 0.003), None)}
    stats = measure.latency_rounds(fns, rounds=3, warmup=0, min_samples=30, max_samples=10_000, min_time_s=0.6,
                                   max_time_s=0.6, min_block_ms=1.0, clock=clock)
    runs = [k for k, _ in itertools.groupby(order)]
    assert runs[:8] == ["a", "b", "a", "b", "a", "b", "a", "b"][:len(runs[:8])] and len(runs) >= 6
    assert stats["a"].median_ms == pytest.approx(2.0) and stats["b"].median_ms == pytest.approx(3.0)
    assert max(stats["a"].samples_ms) == pytest.approx(20.0)  # the burst is in the samples, kept, not hidden
    assert len(entered) > 3  # the context is entered around each block of calls
    clock.t = 0.5  # the burst again
    single = measure.latency(make("c", 0.002), warmup=0, min_samples=5, max_samples=10_000, max_time_s=0.1,
                             min_block_ms=1.0, clock=clock)
    assert single.median_ms == pytest.approx(20.0)  # the same burst owns a measurement made in one stretch


class _FakeHost:
    """Stands in for contention.HostReference: reads 1.5 (slow) while ``slow(t)`` holds for the clock, else 1.0."""

    def __init__(self, clock, slow):
        from mmbench.measure.contention import HostReference

        self.clock, self.is_slow, self.readings = clock, slow, []
        self.best_of = HostReference(fn=lambda: None)  # its judgement, on these readings

    def read(self):
        r = 1.5 if self.is_slow(self.clock.t, len(self.readings)) else 1.0
        self.readings.append(r)
        self.best_of.readings.append(r)
        return r

    def slow(self, *rs):
        return self.best_of.slow(*rs)


def _two_functions(clock, slow):
    def make(cost):
        def fn():
            clock.t += cost * (2 if slow(clock.t) else 1)
        return fn
    return {"a": (make(0.002), None), "b": (make(0.003), None)}


def test_rounds_beside_a_slow_host_reading_are_left_out_and_made_up():
    """The host runs everything at half speed for the first ~0.29 s (a's rounds 1-2, b's round 1; each round lasts
    0.1 s). The reference reads slow around those rounds: they are left out, and a, left with one round of three,
    gets another. Both figures are the quiet ones."""
    slow = lambda t, k=0: t < 0.29  # noqa: E731
    kw = dict(rounds=3, warmup=0, min_samples=30, max_samples=10_000, min_time_s=0.3, max_time_s=0.3,
              min_block_ms=1.0)
    clock = FakeClock([0.0])
    host = _FakeHost(clock, slow)
    stats = measure.latency_rounds(_two_functions(clock, slow), clock=clock, host=host, **kw)
    a, b = stats["a"], stats["b"]
    assert a.median_ms == pytest.approx(2.0) and b.median_ms == pytest.approx(3.0)
    assert len(a.slow_rounds_ms) == 2 and len(a.rounds_ms) == 2 and all(r == pytest.approx(4.0) for r in a.slow_rounds_ms)
    assert len(b.slow_rounds_ms) == 1 and len(b.rounds_ms) == 2 and not a.host_slow and not b.host_slow
    assert max(a.samples_ms) == pytest.approx(2.0)  # the figure's samples are the kept rounds'
    # each kept round with the readings beside it, in the kept rounds' order: both quiet
    assert len(a.rounds_host_ms) == len(a.rounds_ms) and all(p == (1e3, 1e3) for p in a.rounds_host_ms)
    clock = FakeClock([0.0])
    ungated = measure.latency_rounds(_two_functions(clock, slow), clock=clock, **kw)
    # without the reference, two of a's three rounds (compare's unit) are the slow ones
    assert sorted(ungated["a"].rounds_ms)[1] == pytest.approx(4.0, rel=0.05) and not ungated["a"].slow_rounds_ms


def test_a_host_slow_beside_every_round_flags_the_figure_from_all_of_them():
    clock = FakeClock([0.0])
    host = _FakeHost(clock, lambda t, k: k % 2 == 1)  # every other reading slow: one beside every round
    stats = measure.latency_rounds(_two_functions(clock, lambda t: False), rounds=3, warmup=0, min_samples=6,
                                   max_samples=10_000, min_time_s=0.06, max_time_s=0.06, min_block_ms=1.0,
                                   clock=clock, host=host)
    a = stats["a"]
    assert a.host_slow and not a.slow_rounds_ms and len(a.rounds_ms) == 6  # 3 rounds, then 3 made up, all slow
    assert a.median_ms == pytest.approx(2.0) and len(host.readings) == 1 + 2 * 6


def test_host_reference_reads_blocks_and_judges_against_its_usual_speed():
    from mmbench.measure.contention import HostReference

    clock = FakeClock([1e-4])
    ref = HostReference(clock.work, clock=clock, block_ms=1.0)
    assert ref.read() == pytest.approx(1e-4) and ref.calls == 10
    ref.readings += [1e-4] * 8 + [1.3e-4]  # eight more quiet readings and one slow one
    assert ref.usual == pytest.approx(1e-4) and ref.slow(1.3e-4) and not ref.slow(1.1e-4, None)
    # the host's speed the figures were taken at: the slow reading, whose rounds are left out, is not in it
    assert ref.median_ms == pytest.approx(0.1)
    ref.readings += [0.5e-4]  # one lucky reading does not make every other one slow
    assert ref.usual == pytest.approx(1e-4) and not ref.slow(1.1e-4)
    # the host slower for most of the trial: that is its usual speed, kept (and said by median_ms), not left out
    ref.readings += [1.3e-4] * 12
    assert ref.usual == pytest.approx(1.3e-4) and not ref.slow(1.3e-4) and ref.median_ms == pytest.approx(0.13)


def test_latency_blocks_tiny_calls():
    clock = FakeClock([1e-6])
    stats = measure.latency(clock.work, warmup=0, min_samples=3, max_time_s=1, min_block_ms=1.0, clock=clock)
    assert stats.calls_per_sample >= 1000 and stats.median_ms == pytest.approx(1e-3)


def test_latency_of_module_and_inputs_runs_without_grad():
    seen = []

    class Spy(nn.Module):
        def forward(self, xs):
            seen.append(torch.is_grad_enabled())
            return xs[0]

    stats = measure.latency(Spy(), [torch.ones(2)], warmup=1, min_samples=3, max_time_s=0.01, min_block_ms=0.01)
    assert stats.n >= 3 and not any(seen)


def test_cpu_attention_is_counted_not_zero():
    q = torch.randn(2, 4, 16, 8)
    counted = measure.flops(lambda: nn.functional.scaled_dot_product_attention(q, q, q), nn.Identity())["total"]
    assert counted == 2 * (2 * 2 * 4 * 16 * 16 * 8)  # QKᵀ and AV, 2·b·h·s·s·d each


def test_fused_fast_path_is_flagged():
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(1, 10, 32)
    counted = measure.flops(lambda: layer(x), layer)["total"]
    note = measure.flops_note(counted, layer)
    assert counted == 0 and "missed" in note  # inference fast path: the counter sees no matmul
    layer.train()
    assert measure.flops_note(measure.flops(lambda: layer(x), layer)["total"], layer) == ""


def test_training_step_flops_of_a_linear_layer():
    lin = nn.Linear(6, 3)
    x = torch.randn(5, 6)  # input needs no gradient: forward 2·B·i·o, weight gradient 2·B·i·o
    counted = measure.flops(lambda: lin(x).sum().backward(), lin, backward=True)["total"]
    assert counted == 2 * (2 * 5 * 6 * 3)


def test_cpu_peak_memory_sees_an_allocation():
    mem = measure.peak_memory(lambda: torch.ones(64, 2**20).add_(1), "cpu")  # 256 MiB of float32, in place
    assert mem["mem_measure"] == "cpu_live_tensors"
    assert mem["peak_mem_mib"] == pytest.approx(256)


def test_precision_checks():
    with pytest.raises(UserError, match="tf32"):
        precision.check("tf32", "cpu")
    precision.check("bf16", "cpu")
    with precision.region("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.region("fp32", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_precision_sweep_runs_and_labels_trials(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = TINY_SUITE.replace("  rank: [1, 2]", "  rank: [1]\n  precision: [fp32, bf16]")
    prepared = prepare(load_suite(write_suite(text)))
    assert len(prepared.trials) == 12
    assert {t.label for t in prepared.trials if t.method == "tfn"} == {"tfn [fp32]", "tfn [bf16]"}
    run = run_suite(prepared, tmp_path)
    rows = run.rows()
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    for r in rows:
        for col in ("train_step_ms_b8", "throughput_sps_b8", "train_peak_mem_mib_b8", "train_flops", "macs"):
            assert col in r, col
        assert r["throughput_sps_b8"] == pytest.approx(8 / (r["latency_ms_b8"] / 1e3))
        assert r["flops_note"] == ""


def test_oom_is_a_status_and_the_suite_goes_on(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = TINY_SUITE.replace("  - method: late\n", "  - method: tests.oom_module:OutOfMemory\n  - method: late\n")
    run = run_suite(prepare(load_suite(write_suite(text))), tmp_path)
    status = {r["method"]: r["status"] for r in run.rows()}
    assert status["tests.oom_module:OutOfMemory"] == "oom"
    assert status["late"] == "ok" and status["tfn"] == "ok"


@pytest.mark.parametrize("edit,words", [
    (("device: cpu", "device: cpu\n  precision: tf32"), "tf32"),
    (("device: cpu", "device: cuda"), "CUDA is not available"),
])
def test_unusable_device_settings_exit_2(write_suite, edit, words):
    if torch.cuda.is_available() and "cuda" in edit[1]:
        pytest.skip("this machine has CUDA")
    r = run_cli("validate", str(write_suite(TINY_SUITE.replace(*edit))))
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_env_records_what_changes_a_timing():
    from mmbench.measure.env import environment

    env = environment("cpu")
    for key in ("cpu_model", "cpu_count_physical", "torch_threads", "torch", "cpu_capability",
                "float32_matmul_precision", "compile_backend", "cxx", "cpu_governor"):
        assert key in env, key


def test_functions_sampled_together_share_the_hosts_speed_and_subtract():
    """A whole forward (5 ms: 2 + 2 of stages and 1 of its own) and its two stages, while the host runs at 2/3 speed
    from 0.1 s to 0.16 s and from 0.3 s to 0.6 s. Apart, each in one stretch of 0.3 s, the encoders' falls in the slow
    one: the stages' sum misses the whole by 0 ms against 1 ms. Together, a block of each in turn per sample over one
    stretch of 0.3 s (each member's samples span the stretch its minimum time asks for), the three see the slow part
    alike (a fifth of their samples each): the difference of medians is the whole's own 1 ms."""
    def run(together):
        clock, order = FakeClock([0.0]), []

        def make(name, cost):
            def fn():
                order.append(name)
                clock.t += cost * (1.5 if 0.1 <= clock.t < 0.16 or 0.3 <= clock.t < 0.6 else 1)
            return fn

        fns = {"whole": (make("whole", 0.005), None), "enc": (make("enc", 0.002), None),
               "fus": (make("fus", 0.002), None)}
        stats = measure.latency_rounds(fns, rounds=1, warmup=0, min_samples=10, max_samples=10_000,
                                       min_time_s=0.3, max_time_s=0.3, min_block_ms=1.0, clock=clock,
                                       together=together)
        return stats, [k for k, _ in itertools.groupby(order)], clock.t

    apart, runs, spent = run(())
    assert runs == ["whole", "enc", "fus", "whole", "enc", "fus"]  # calibration, then one stretch each
    assert apart["enc"].median_ms == pytest.approx(3.0)
    assert apart["whole"].median_ms - apart["enc"].median_ms - apart["fus"].median_ms == pytest.approx(0.0)
    together, runs, spent_together = run((("whole", "enc", "fus"),))
    assert runs[:9] == ["whole", "enc", "fus"] * 3 and len(runs) > 90  # a block of each, in turn, sample by sample
    assert together["whole"].n == together["enc"].n == together["fus"].n
    gap = together["whole"].median_ms - together["enc"].median_ms - together["fus"].median_ms
    assert gap == pytest.approx(1.0)
    # the group's samples span each member's minimum time once: a third of what the members spend apart
    assert spent == pytest.approx(0.9, abs=0.03) and spent_together == pytest.approx(0.3, abs=0.03)


def test_a_group_whose_figures_stay_noisy_spends_each_members_max_time():
    clock, k = FakeClock([0.0]), itertools.count()

    def noisy(cost):
        def fn():
            clock.t += cost * (1 if next(k) % 2 else 4)  # samples that never pin their median down
        return fn

    fns = {n: (noisy(c), None) for n, c in (("whole", 0.002), ("enc", 0.001), ("fus", 0.001))}
    stats = measure.latency_rounds(fns, rounds=1, warmup=0, min_samples=10, max_samples=10_000, min_time_s=0.1,
                                   max_time_s=0.3, min_block_ms=1.0, clock=clock, together=(tuple(fns),))
    assert all(s.noisy for s in stats.values()) and clock.t == pytest.approx(0.9, abs=0.03)
