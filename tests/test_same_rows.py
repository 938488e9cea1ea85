"""The restructuring of issue 15 changes where code lives, not what a run produces: every shipped suite expands to
the same trial ids, and a small suite run end to end gives the same rows (ids and columns) and raw sample keys as the
snapshot taken before it. Values are not compared (timings differ run to run); names and ids are the contract that
resume, history and compare rely on.

Regenerate the snapshot only for a deliberate change of ids or columns:  python tests/test_same_rows.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "same_rows.json"

# Two tasks (vectors; sequences with padding), methods of several families, a swept rank, uneven dims, and every
# measure on (latency with a training step, memory, FLOPs, accuracy, robustness, retrieval).
SUITES = {"vectors": """\
name: same-rows
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 4, n_train: 120, n_val: 60, n_test: 60, noise: 0.4}
train: {epochs: 1, batch_size: 64, seeds: [0, 1]}
measure:
  device: cpu
  threads: 1
  latency: {batch_sizes: [1, 4], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1}
  robustness: {levels: [0.0, 0.5], seed: 0}
sweep:
  dims: [4, [4, 6, 4]]
  rank: [1, 2]
methods:
  - method: tfn
  - method: lmf
  - method: late
  - method: contrastive
""", "sequences": """\
name: same-rows-seq
task:
  dataset: synthetic
  params: {modalities: 2, dim: 4, n_train: 80, n_val: 40, n_test: 40, seq_len: [5, 3], variable_length: true}
train: {epochs: 1, batch_size: 64, seeds: [0]}
measure:
  device: cpu
  threads: 1
  latency: {batch_sizes: [2], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [8]
methods:
  - method: mult
"""}


def _shipped_ids() -> dict[str, list[str]]:
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    out = {}
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        for quick in (False, True):
            trials = prepare(load_suite(path, quick=quick), "cpu").trials
            out[f"{path.name}{' --quick' if quick else ''}"] = [t.id for t in trials]
    return out


def _run_rows(tmp: Path) -> dict[str, dict]:
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    out = {}
    for name, text in SUITES.items():
        suite_path = tmp / f"{name}.yaml"
        suite_path.write_text(text)
        run = run_suite(prepare(load_suite(suite_path)), tmp / "out")
        samples = {json.loads(line)["trial_id"]: sorted(json.loads(line)) for line in
                   (run.path / "samples.jsonl").read_text().splitlines() if line.strip()}
        out.update({r["trial_id"]: {"label": r["label"], "task": r["task"], "dims": r["dims"], "status": r["status"],
                                    "columns": sorted(r), "raw": samples.get(r["trial_id"], [])}
                    for r in run.rows()})
    return out


def snapshot(tmp: Path) -> dict:
    return {"shipped_suite_ids": _shipped_ids(), "rows": _run_rows(tmp)}


def test_shipped_suites_expand_to_the_same_trial_ids():
    want = json.loads(SNAPSHOT.read_text())["shipped_suite_ids"]
    assert _shipped_ids() == want


def test_a_run_gives_the_same_rows_ids_and_columns(tmp_path):
    want = json.loads(SNAPSHOT.read_text())["rows"]
    got = _run_rows(tmp_path)
    assert set(got) == set(want), "trial ids changed"
    for tid, row in want.items():
        assert got[tid]["status"] == "ok", got[tid]
        assert got[tid] == row, f"{row['label']} {row['dims']}: rows differ"


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        snap = snapshot(Path(d))
    bad = {t: r for t, r in snap["rows"].items() if r["status"] != "ok"}
    if bad:
        raise SystemExit(f"not all trials ran: {bad}")
    SNAPSHOT.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}: {sum(map(len, snap['shipped_suite_ids'].values()))} shipped trial ids, "
          f"{len(snap['rows'])} run rows")
