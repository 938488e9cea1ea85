"""Tuning floors of issue 29, printed with the load average (figures live here, not in tests).

- rescue: with a deliberately bad train.lr (0.3 for Adam), tuning (--trials, default 20, each tuning trial scored
  over --tune-seeds seeds, default 3) brings TFN, LMF and
  early(mlp) to within 2 standard errors (the test split's binomial SE) of the synergy task's Bayes ceiling; the
  same suite untuned is shown beside it;
- equal budget: every configuration ran exactly `trials` tuning trials, counted from the rows and from samples.jsonl;
- determinism: the same tuned suite run twice chooses the same hyperparameters;
- resume (--kills K, default 0): a tuned run killed with SIGKILL at K instants and resumed each time ends with the
  chosen hyperparameters and accuracies of an uninterrupted run, no tuning trial counted twice;
- overhead: one tuning trial (an Optuna study with its journal file) against a plain `fit` of the same configuration,
  interleaved, the ratio of medians (floor ≤ 1.1).

The search space is by default the shipped suite's kind (lr, weight decay, LMF's rank, early(mlp)'s hidden width);
--lr-only searches the learning rate alone, the control. --sampler-seed and --parallel vary the study.

Run from the repository root:  python benchmarks/tuning_floors.py [--trials 20] [--epochs 15] [--kills 3]
(exit code 1 if a floor fails). Wall-time figures on a shared, loaded machine are polluted: the load is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmbench.run import prepare, run_suite  # noqa: E402
from mmbench.suite import load_suite  # noqa: E402

failures: list[str] = []

SUITE = """\
name: tuning-floors
task:
  dataset: synthetic
  params: {{interaction: synergy, modalities: 3, dim: 16, num_classes: 2, noise: 0.4,
           n_train: 3000, n_val: 1000, n_test: 2000, seed: 0}}
model: {{encoder_hidden: []}}
train: {{epochs: {epochs}, batch_size: 128, lr: 0.3, optimizer: adam, patience: 5, seeds: {seeds}}}
measure: {{device: cpu, threads: 1, latency: null, memory: false, flops: false, retrieval: false}}
sweep: {{dims: [16]}}
{tune}
methods:
  - method: tfn
  - method: lmf
    params: {{rank: 4}}{lmf_space}
  - method: early
    label: early(mlp)
    params: {{hidden: 32}}{early_space}
"""
# --method-params: each method's own hyperparameter searched too, as suites/tuned_fusion.yaml does
METHOD_SPACES = {"lmf_space": "\n    tune: {{space: {{rank: {{int: [1, 16]}}}}}}",
                 "early_space": "\n    tune: {{space: {{hidden: {{choice: [16, 32, 64, 128]}}}}}}"}
SPACES = {"lmf_space": "", "early_space": ""}
TUNE = """\
tune:
  trials: {trials}
  seeds: {tune_seeds}
  parallel: {parallel}
  sampler: tpe
  seed: {sampler_seed}
  space:
    lr: {{loguniform: [0.0001, 0.3]}}
{extra}"""
WEIGHT_DECAY = "    weight_decay: {choice: [0.0, 0.0001, 0.001, 0.01]}\n"


def check(name: str, ok: bool, figure: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {figure}")
    if not ok:
        failures.append(name)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


EXTRA = ""  # --weight-decay: also search weight decay
TUNE_SEEDS, PARALLEL, SAMPLER_SEED = 1, 1, 0  # --tune-seeds, --parallel, --sampler-seed


def write(tmp: Path, name: str, trials: int | None, epochs: int, seeds: list[int]) -> Path:
    path = tmp / f"{name}.yaml"
    tune = TUNE.format(trials=trials, extra=EXTRA, tune_seeds=TUNE_SEEDS, parallel=PARALLEL,
                       sampler_seed=SAMPLER_SEED) if trials else ""
    spaces = {k: v.format() for k, v in SPACES.items()} if trials else {k: "" for k in SPACES}
    path.write_text(SUITE.format(epochs=epochs, seeds=seeds, tune=tune, **spaces))
    return path


def run(path: Path, out: Path):
    t0 = time.perf_counter()
    run_dir = run_suite(prepare(load_suite(path)), out)
    print(f"  {path.stem}: {len(run_dir.rows())} trials in {time.perf_counter() - t0:.1f} s ({load()})")
    return run_dir


def samples(run_dir) -> dict[str, dict]:
    return {s["trial_id"]: s for s in map(json.loads, (run_dir.path / "samples.jsonl").read_text().splitlines())}


def rescue_and_budget(tmp: Path, trials: int, epochs: int, seeds: list[int]):
    print(f"rescue: train.lr 0.3, tuning lr in [1e-4, 0.3]{' and weight decay' if EXTRA else ''}"
          f"{' and each method its own (LMF rank, early hidden)' if SPACES['lmf_space'] else ''} with {trials} "
          f"trials of {TUNE_SEEDS} seed(s) each (parallel {PARALLEL}), {epochs} epochs, final seeds {seeds}")
    untuned = {r["label"]: r for r in run(write(tmp, "untuned", None, epochs, seeds), tmp / "out").rows()}
    tuned_run = run(write(tmp, "tuned", trials, epochs, seeds), tmp / "out")
    for r in tuned_run.rows():
        if r["status"] != "ok":
            check(f"{r['label']} status", False, f"{r['status']} {r['error']}")
            continue
        u = untuned.get(r["label"], {})
        gap = r["bayes_accuracy"] - r["acc_mean"]
        check(f"rescue {r['label']} within 2 SE of Bayes", gap <= 2 * r["acc_se"],
              f"test acc {r['acc_mean']:.4f} (untuned {u.get('acc_mean', float('nan')):.4f}), Bayes "
              f"{r['bayes_accuracy']:.4f}, gap {gap:+.4f} vs 2 SE {2 * r['acc_se']:.4f}; val {r['untuned_val']:.3f}"
              f" → {r['tuned_val']:.3f}, chosen {r['tuned_params']}")
    print("equal budget:")
    raw = samples(tuned_run)
    for r in tuned_run.rows():
        tuning = raw.get(r["trial_id"], {}).get("tuning", [])
        slots = [t["slot"] for t in tuning]
        fits = sum(len(t.get("vals", [None])) for t in tuning if t["state"] == "complete")
        check(f"budget {r['label']}", r.get("tune_trials") == trials and slots == list(range(trials))
              and r.get("tune_seeds") == TUNE_SEEDS and fits == trials * TUNE_SEEDS,
              f"row tune_trials {r.get('tune_trials')} × tune_seeds {r.get('tune_seeds')}, samples {len(tuning)} "
              f"tuning trials (slots unique: {len(set(slots)) == len(slots)}) with {fits} seed fits, budget {trials}")
    return tuned_run


def determinism(tmp: Path, first, trials: int, epochs: int, seeds: list[int]) -> None:
    print("determinism: the tuned suite again")
    again = run(write(tmp, "tuned", trials, epochs, seeds), tmp / "again")
    a = {r["trial_id"]: r.get("tuned_params") for r in first.rows()}
    b = {r["trial_id"]: r.get("tuned_params") for r in again.rows()}
    check("same suite → same chosen hyperparameters", a == b, json.dumps(b))


def resume(tmp: Path, kills: int, trials: int, epochs: int, seeds: list[int], reference) -> None:
    print(f"resume: SIGKILL at {kills} random instants, --resume after each")
    path = write(tmp, "tuned", trials, epochs, seeds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp / "killed"
    rng = random.Random(0)
    run_dir = None
    for k in range(kills + 1):
        cmd = [sys.executable, "-m", "mmbench", "run", str(path), "--out", str(out)]
        if run_dir is not None:
            cmd += ["--resume", str(run_dir)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if k < kills:
            time.sleep(rng.uniform(4.0, 20.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        proc.wait()
        if run_dir is None and (out / "tuning-floors").is_dir():  # killed before it made one: start afresh
            run_dir = next((out / "tuning-floors").iterdir(), None)
        if k == kills and proc.returncode != 0:
            check("resumed run finishes", False, proc.stderr.read().decode()[-500:])
            return
    from mmbench.store import RunDir

    # evidence that kills landed inside tuning: tuning trials the resumed studies found running and ran again
    killed = sum(p.read_text().count('"killed"') for p in (run_dir / "tuning").glob("*.log"))
    print(f"  {killed} tuning trial(s) were killed mid-way and run again")
    got = {r["trial_id"]: r for r in RunDir(run_dir).rows()}
    raw = {s["trial_id"]: s for s in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}
    for r in reference.rows():
        g = got.get(r["trial_id"], {})
        tuning = raw.get(r["trial_id"], {}).get("tuning", [])
        same = g.get("tuned_params") == r["tuned_params"] and g.get("acc_mean") == r["acc_mean"]
        check(f"resume {r['label']}", same and [t["slot"] for t in tuning] == list(range(trials)),
              f"chosen {g.get('tuned_params')} vs {r['tuned_params']}, acc {g.get('acc_mean')} vs {r['acc_mean']}, "
              f"{len(tuning)} tuning trials")


def overhead(tmp: Path, epochs: int, repeats: int) -> None:
    """One tuning trial (journal storage, sampler, enqueue, tell) against the plain fits it makes, the --tune-seeds
    seeds of the same configuration trained as a trial trains its seeds (together where they can be joined)."""
    from mmbench import data as datasets
    from mmbench import tuning
    from mmbench.measure import seeds_together
    from mmbench.model import build
    from mmbench.suite import TrainSpec, TuneSpec

    import torch

    torch.set_num_threads(1)
    data = datasets.load("synthetic", interaction="synergy", modalities=2, dim=8, num_classes=2, noise=0.5,
                         n_train=2000, n_val=1000, n_test=2000, seed=0)
    spec = TrainSpec(epochs=epochs, batch_size=128, lr=0.003, seeds=list(range(TUNE_SEEDS)))
    hp = {"rank": 4}

    def make(h=hp):
        return build("lmf", h, data.input_dims, (16, 16), data.num_classes, [])

    tune_spec = TuneSpec(trials=1, seeds=TUNE_SEEDS, space={"lr": {"loguniform": [1e-4, 0.3]}})
    plain, tuned = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        seeds_together.fit_seeds(make, data.train, data.val, spec, spec.seeds, target=data.target, vmap_too=False)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tuning.tune(tune_spec, spec, hp, make, data.train, data.val, target=data.target,
                    storage=tmp / "overhead" / f"{i}.log", name="overhead")
        tuned.append(time.perf_counter() - t0)
    ratio = statistics.median(tuned) / statistics.median(plain)
    check(f"overhead: one tuning trial ≤ 1.1× its {TUNE_SEEDS} plain fit(s)", ratio <= 1.1,
          f"median {statistics.median(tuned) * 1e3:.0f} ms vs {statistics.median(plain) * 1e3:.0f} ms, ratio "
          f"{ratio:.3f} over {repeats} interleaved pairs (LMF, {epochs} epochs; {load()})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the final fits")
    ap.add_argument("--kills", type=int, default=0, help="resume floor: SIGKILL this many times (0: skip)")
    ap.add_argument("--overhead-repeats", type=int, default=5)
    ap.add_argument("--lr-only", action="store_true",
                    help="search the learning rate alone (the control); by default the space is the shipped suite's "
                         "kind (suites/tuned_fusion.yaml): lr, weight decay, LMF's rank and early(mlp)'s hidden width")
    ap.add_argument("--weight-decay", action="store_true", help="with --lr-only: weight decay too")
    ap.add_argument("--method-params", action="store_true", help="with --lr-only: each method's own too")
    ap.add_argument("--tune-seeds", type=int, default=3, help="seeds each tuning trial trains (tune.seeds)")
    ap.add_argument("--parallel", type=int, default=1, help="tuning trials asked at once (tune.parallel)")
    ap.add_argument("--sampler-seed", type=int, default=0, help="tune.seed: the sampler's seed")
    ap.add_argument("--skip", nargs="*", default=[], choices=["rescue", "determinism", "overhead"])
    args = ap.parse_args()
    global EXTRA, TUNE_SEEDS, PARALLEL, SAMPLER_SEED
    EXTRA = WEIGHT_DECAY if args.weight_decay or not args.lr_only else ""
    TUNE_SEEDS, PARALLEL, SAMPLER_SEED = args.tune_seeds, args.parallel, args.sampler_seed
    if args.method_params or not args.lr_only:
        SPACES.update(METHOD_SPACES)
    seeds = list(range(args.seeds))
    print(f"start: {load()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        first = None
        if "rescue" not in args.skip:
            first = rescue_and_budget(tmp, args.trials, args.epochs, seeds)
        if "determinism" not in args.skip and first is not None:
            determinism(tmp, first, args.trials, args.epochs, seeds)
        if args.kills and first is not None:
            resume(tmp, args.kills, args.trials, args.epochs, seeds, first)
        if "overhead" not in args.skip:
            overhead(tmp, args.epochs, args.overhead_repeats)
    print(f"end: {load()}")
    print("all floors hold" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
