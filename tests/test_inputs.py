"""Input a user gives: each bad input is one line naming what is wrong, exit code 2, nothing written."""
import json
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, TINY_SUITE, run_cli

# --- start-up: a suite that cannot be read or checked is answered before torch is imported ---------------------------

_NO_TORCH = textwrap.dedent("""
    import sys
    sys.argv = ["mmbench", *sys.argv[1:]]
    from mmbench.cli import main
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    print("EXIT", code, "TORCH", "torch" in sys.modules)
""")


@pytest.mark.parametrize("args", [
    ("validate", "{bad}"), ("run", "{bad}"), ("validate", "{schema}"), ("run", "{missing}"), ("validate", "{missing}"),
    ("run", "{schema}", "--quick"), ("--help",),
])
def test_bad_suite_is_answered_before_torch_loads(tmp_path, args):
    (tmp_path / "bad.yaml").write_text("name: x\nmethods: [\n")
    (tmp_path / "schema.yaml").write_text(TINY_SUITE.replace("train:", "trian:"))
    paths = {"bad": tmp_path / "bad.yaml", "schema": tmp_path / "schema.yaml", "missing": tmp_path / "missing.yaml"}
    argv = [a.format(**paths) for a in args]
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("EXIT 0" if args == ("--help",) else "EXIT 2"), (r.stdout, r.stderr)
    assert last.endswith("TORCH False"), "torch was imported before the suite was checked"
    if args != ("--help",):
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# --- data files: the suite's location and the data file named apart; CSV headers; label columns; label sets ---------

import numpy as np  # noqa: E402

from mmbench import data  # noqa: E402
from mmbench.errors import UserError  # noqa: E402
from tests.inproc import cli, one_line_error  # noqa: E402

MV_SUITE = """\
name: mv
task:
  dataset: multiview
  params: {path: mv}
measure: {device: cpu, latency: null, flops: false}
train: {epochs: 1, seeds: [0]}
sweep: {dims: [4]}
methods: [{method: early}]
"""


def _views(root, n=60, labels=None, header="", label_col=False):
    """Two CSV views and a labels file; ``header``: a first line for view a; ``label_col``: labels as a's last column."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3 if labels is None else np.asarray(labels)
    a = rng.normal(size=(n, 4)) + y[:, None]
    if label_col:
        a = np.concatenate([a, y[:, None]], 1)
    b = rng.normal(size=(n, 3)) - y[:, None]
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.csv").write_text(header + "\n".join(",".join(f"{v:.6f}" for v in r) for r in a) + "\n")
    np.savetxt(root / "b.csv", b, delimiter=",")
    np.savetxt(root / "labels.csv", y, fmt="%d")
    (root / "manifest.yaml").write_text("views: {a: a.csv, b: b.csv}\nlabels: labels.csv\n")
    return a, y


def test_a_data_error_names_the_suite_line_and_the_data_file_apart(tmp_path, capsys, monkeypatch):
    _views(tmp_path / "mv")
    np.savetxt(tmp_path / "mv" / "b.csv", np.zeros((50, 3)), delimiter=",")
    suite = tmp_path / "s.yaml"
    suite.write_text(MV_SUITE)
    code, out, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 2 and one_line_error(err)
    # the suite's own line (2: `task:`) goes with the suite's path; the data file is named on its own, with no line
    assert f"{suite}:2: task: {tmp_path / 'mv' / 'b.csv'}: view 'b': has 50 rows" in err, err
    assert "b.csv:2" not in err
    (tmp_path / "s.yaml").write_text(MV_SUITE.replace("path: mv", "path: nodata"))
    code, _, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 2 and f"{suite}:2: task: {tmp_path / 'nodata'}: no such file" in err, err


def test_the_same_file_keeps_its_own_line():
    e = UserError("bad", file="s.yaml", line=3).at(file="s.yaml", key="task", line=9)
    assert e.render() == "s.yaml:3: task: bad"


def test_a_numeric_header_row_is_detected_and_said(tmp_path, capsys, monkeypatch):
    a, _ = _views(tmp_path / "mv", header="0,1,2,3\n")  # as the UCI Multiple Features CSVs: column numbers
    t = data.load("multiview", path=str(tmp_path / "mv"), standardize=False)
    assert len(t.train) + len(t.val) + len(t.test) == 60  # the header is not a sample
    assert any("a.csv: first line read as a header" in n and "column numbers 0..3" in n for n in t.info["notes"])
    rows = np.concatenate([t.train.xs[0], t.val.xs[0], t.test.xs[0]])
    assert not (np.abs(rows - np.arange(4)).max(1) < 1e-6).any()
    suite = tmp_path / "s.yaml"
    suite.write_text(MV_SUITE)
    code, out, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 0 and "note" in err and "first line read as a header" in err
    _views(tmp_path / "mv2", header="10,20,30,40\n")  # increasing integers outside every column's range
    assert "header" in " ".join(data.load("multiview", path=str(tmp_path / "mv2")).info["notes"])
    _views(tmp_path / "mv3")  # no header: nothing skipped, nothing said
    t = data.load("multiview", path=str(tmp_path / "mv3"))
    assert len(t.train) + len(t.val) + len(t.test) == 60 and "notes" not in t.info


def test_a_label_column_left_in_a_view_is_refused(tmp_path, capsys, monkeypatch):
    _views(tmp_path / "mv", label_col=True)
    with pytest.raises(UserError) as exc:
        data.load("multiview", path=str(tmp_path / "mv"))
    msg = exc.value.render()
    assert "a.csv" in msg and "view 'a'" in msg and "last column 4 equals the labels" in msg
    _views(tmp_path / "mv2", labels=(np.arange(60) % 3) + 1, label_col=True)  # compared with the labels as written
    with pytest.raises(UserError):
        data.load("multiview", path=str(tmp_path / "mv2"))


def test_labels_one_to_k_are_remapped_not_padded_and_the_map_is_saved(tmp_path, capsys, monkeypatch):
    _, y = _views(tmp_path / "mv", labels=(np.arange(60) % 3) + 1)  # 1..3
    t = data.load("multiview", path=str(tmp_path / "mv"))
    assert t.num_classes == 3 and t.info["label_map"] == [1, 2, 3]
    got = np.concatenate([t.train.y, t.val.y, t.test.y])
    assert sorted(set(got.tolist())) == [0, 1, 2] and any("remapped" in n for n in t.info["notes"])
    _views(tmp_path / "mv2", labels=np.where(np.arange(60) % 2, 7, -1))  # {-1, 7}
    t = data.load("multiview", path=str(tmp_path / "mv2"))
    assert t.num_classes == 2 and t.info["label_map"] == [-1, 7]
    # num_classes given: its range is the user's word, and 1..K under it is refused with the way out
    (tmp_path / "mv" / "manifest.yaml").write_text("views: {a: a.csv, b: b.csv}\nlabels: labels.csv\nnum_classes: 3\n")
    with pytest.raises(UserError) as exc:
        data.load("multiview", path=str(tmp_path / "mv"))
    assert "out of range 0..2" in exc.value.render() and "leave num_classes out" in exc.value.render()
    # the mapping travels with the run
    (tmp_path / "mv" / "manifest.yaml").write_text("views: {a: a.csv, b: b.csv}\nlabels: labels.csv\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(MV_SUITE)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path / "res", "--json")
    assert code == 0, err
    run_dir = Path(json.loads(out)["run_dir"])
    assert json.loads((run_dir / "tasks.json").read_text())[0]["label_map"] == [1, 2, 3]


# --- task labels: documented, unique -------------------------------------------------------------------------------

TWO_TASKS = """\
name: two
tasks:
  - dataset: synthetic
    params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32, noise: 0.4}
  - dataset: synthetic
    params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32, noise: 0.8}
measure: {device: cpu, latency: null}
train: {epochs: 1, seeds: [0]}
sweep: {dims: [4]}
methods: [{method: early}]
"""


def test_two_tasks_of_one_dataset_get_names_apart(tmp_path):
    from mmbench.plan import expand, task_labels
    from mmbench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text(TWO_TASKS)
    s = load_suite(p)
    assert task_labels(s) == ["synthetic-synergy(noise=0.4)", "synthetic-synergy(noise=0.8)"]
    assert [t.task_label for t in expand(s, [2, 2], "cpu")] == task_labels(s)
    lines = TWO_TASKS.splitlines()
    lines.insert(3, "    label: easy")  # one labelled: the other keeps the dataset's own name
    p.write_text("\n".join(lines) + "\n")
    assert task_labels(load_suite(p)) == ["easy", "synthetic-synergy"]


def test_a_task_label_given_twice_is_refused_with_its_line(tmp_path, capsys, monkeypatch):
    lines = TWO_TASKS.splitlines()
    lines.insert(5, "    label: same")
    lines.insert(3, "    label: same")
    p = tmp_path / "s.yaml"
    p.write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, monkeypatch, "run", p, "--out", tmp_path / "res")
    assert code == 2 and one_line_error(err)
    assert f"{p}:7: tasks.1.label: task label 'same' is also task 0's" in err, err
    assert not (tmp_path / "res").exists()


# --- dims spellings --------------------------------------------------------------------------------------------------

DIMS_SUITE = """\
name: d
task: {dataset: synthetic, params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32}}
measure: {device: cpu, latency: null}
sweep: {dims: SUITE}
methods: [{method: early}, {method: lmf, sweep: {dims: METHOD}}]
"""


@pytest.mark.parametrize("suite_dims, method_dims, want", [
    ("16", '"8x12"', [(16, 16), (8, 12)]),
    ('"16x16"', "[4, '6x8']", [(16, 16), (4, 4), (6, 8)]),
    ("[8, [4, 6]]", "12", [(8, 8), (4, 6), (12, 12)]),
])
def test_dims_as_one_int_or_as_AxB_at_suite_and_method_level(tmp_path, suite_dims, method_dims, want):
    from mmbench.plan import expand
    from mmbench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text(DIMS_SUITE.replace("SUITE", suite_dims).replace("METHOD", method_dims))
    assert [t.dims for t in expand(load_suite(p), [2], "cpu")] == want


@pytest.mark.parametrize("bad", ['"16x"', '"sixteen"', "true"])
def test_a_dims_spelling_that_is_not_one_says_which_are(tmp_path, capsys, monkeypatch, bad):
    p = tmp_path / "s.yaml"
    p.write_text(DIMS_SUITE.replace("SUITE", bad).replace(", sweep: {dims: METHOD}", ""))
    code, _, err = cli(capsys, monkeypatch, "validate", p)
    assert code == 2 and one_line_error(err) and f"{p}:4: sweep.dims" in err, err
    assert "an integer" in err or "valid list" in err


# --- user modules: the suite's folder, then the current directory; the closest class name ---------------------------

USER_MOD = """\
import torch
from torch import nn


class MyFusion(nn.Module):
    def __init__(self, dims, out_dim, hidden: int = 4):
        super().__init__()
        self.lin = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        return self.lin(torch.cat(xs, -1))
"""


def _user_suite(folder, method):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "s.yaml"
    p.write_text(TINY_SUITE.replace("  - method: late\n", f"  - method: {method}\n")
                 .replace("  - method: tfn\n", "").replace("train: {epochs: 2", "train: {epochs: 1"))
    return p


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_user_module_beside_the_suite_is_found_from_another_directory(tmp_path, workers):
    name = f"beside_suite_{workers}"
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / f"{name}.py").write_text(USER_MOD)
    suite = _user_suite(tmp_path / "proj", f"{name}:MyFusion")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("run", str(suite), "--out", str(tmp_path / "res"), "--quick", "--json", "--workers", workers,
                cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert {x["status"] for x in rows} == {"ok"} and any(x["method"] == f"{name}:MyFusion" for x in rows)


def test_the_suite_folder_comes_before_the_current_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "shadowed_mod.py").write_text(USER_MOD)
    (tmp_path / "shadowed_mod.py").write_text(USER_MOD.replace("class MyFusion", "class OtherFusion"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMBENCH_MODULE_DIRS", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, err = cli(capsys, monkeypatch, "validate", _user_suite(tmp_path / "proj", "shadowed_mod:MyFusion"))
    assert code == 0, err
    sys.modules.pop("shadowed_mod", None)


def test_a_missing_class_suggests_the_closest_and_a_missing_module_says_where_it_looked(tmp_path, capsys,
                                                                                        monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "typo_mod.py").write_text(USER_MOD)
    monkeypatch.setenv("MMBENCH_MODULE_DIRS", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    suite = _user_suite(tmp_path / "proj", "typo_mod:MyFusoin")
    code, _, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 2 and one_line_error(err) and "has no class 'MyFusoin' (did you mean 'MyFusion'?)" in err, err
    suite = _user_suite(tmp_path / "proj", "nowhere_mod:MyFusion")
    code, _, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 2 and one_line_error(err) and f"looked in {tmp_path / 'proj'}" in err, err
    sys.modules.pop("typo_mod", None)


# --- small CLI fixes: list's suggestion, report --out into a new folder, history finds its database -----------------

def test_list_method_suggests_methods(capsys, monkeypatch):
    code, _, err = cli(capsys, monkeypatch, "list", "method")
    assert code == 2 and one_line_error(err) and "did you mean 'methods'?" in err
    code, out, _ = cli(capsys, monkeypatch, "list", "methods")
    assert code == 0 and "lmf" in out


def test_report_out_creates_its_folder_and_nothing_on_a_bad_run(tmp_path, capsys, monkeypatch):
    from tests.fakerun import make_run

    run = make_run(tmp_path, "r1")
    out = tmp_path / "new_dir" / "deeper" / "x.md"
    code, stdout, err = cli(capsys, monkeypatch, "report", run, "--format", "md", "--out", out)
    assert code == 0, err
    assert out.is_file() and "Test accuracy" in out.read_text()
    bad_out = tmp_path / "other_dir" / "y.md"
    code, _, err = cli(capsys, monkeypatch, "report", tmp_path / "not_a_run", "--out", bad_out)
    assert code == 2 and one_line_error(err) and not (tmp_path / "other_dir").exists()


def test_history_without_db_finds_the_database_of_the_out_a_run_used(tmp_path, capsys, monkeypatch):
    from mmbench import history as H
    from tests.fakerun import make_run

    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, monkeypatch, "history")
    assert code == 2 and one_line_error(err) and "looked for results/history.sqlite" in err
    code, _, err = cli(capsys, monkeypatch, "compare", "history:fake", tmp_path)  # compare's history: alike
    assert code == 2 and one_line_error(err) and "looked for results/history.sqlite" in err
    H.record_run(tmp_path / "myres" / "history.sqlite", make_run(tmp_path / "myres", "r1"))  # as `run --out myres`
    code, out, err = cli(capsys, monkeypatch, "history")
    assert code == 0 and "r1" in out and "myres/history.sqlite" in err
    H.record_run(tmp_path / "results" / "history.sqlite", make_run(tmp_path / "results", "r2"))  # the default wins
    code, out, _ = cli(capsys, monkeypatch, "history")
    assert code == 0 and "r2" in out and "r1" not in out
    (tmp_path / "results" / "history.sqlite").unlink()
    H.record_run(tmp_path / "other" / "history.sqlite", make_run(tmp_path / "other", "r3"))
    code, _, err = cli(capsys, monkeypatch, "history")
    assert code == 2 and one_line_error(err) and "myres/history.sqlite, other/history.sqlite" in err
