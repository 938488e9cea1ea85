"""Hostile suite files (issue 17 and issue 16's first input item): every one is a single line naming the file, the
line and the key where known, exit code 2, in well under a second, with nothing written and nothing executed."""
import pickle
import time
from pathlib import Path

import pytest

from conftest import TINY_SUITE
from inproc import cli, one_line_error

OK = """\
name: hostile
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 4, n_train: 120, n_val: 60, n_test: 60}
train: {epochs: 1, seeds: [0]}
measure: {device: cpu, latency: null}
sweep:
  dims: [4]
methods:
  - method: lmf
    params: {rank: 2}
"""


def _laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + OK


def _validate(capsys, monkeypatch, path: Path) -> tuple[int, str]:
    start = time.perf_counter()
    code, out, err = cli(capsys, monkeypatch, "validate", path)
    assert time.perf_counter() - start < 20, "validate must answer, not expand"  # a hang guard, not a timing goal
    return code, err


PARSER_ATTACKS = {
    "billion_laughs": (_laughs(), "expands to more than"),
    "deep_flow": (OK + "description: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels"),
    "deep_block": (OK + "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "x: 1\n",
                   "nested more than 64 levels"),
    "self_alias": ("loop: &l [*l]\n" + OK, "alias refers to the collection that contains it"),
    "many_aliases": ("v: &v 1\nl: [" + ", ".join(["*v"] * 1500) + "]\n" + OK, "more than 1000 aliases"),
    "duplicate_key": (OK.replace("train: {epochs: 1", "train: {epochs: 5, epochs: 1"),
                      "key 'epochs' is given twice in one mapping (lines 5 and 5)"),
    "duplicate_top_key": (OK + "name: other\n", "key 'name' is given twice in one mapping (lines 1 and 12)"),
}


@pytest.mark.parametrize("case", sorted(PARSER_ATTACKS))
def test_parser_attacks_are_one_line(case, write_suite, capsys, monkeypatch):
    text, message = PARSER_ATTACKS[case]
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err), err
    assert message in err and "suite.yaml:" in err


def test_a_huge_file_is_refused_before_it_is_read(write_suite, capsys, monkeypatch):
    code, err = _validate(capsys, monkeypatch, write_suite(OK + "#" * (2 << 20) + "\n"))
    assert code == 2 and one_line_error(err) and "may be at most" in err


@pytest.mark.parametrize("data, message", [
    (OK.replace("name: hostile", "name: caf\xe9").encode("latin-1"), "suite.yaml:1: not UTF-8 text: byte 0xe9"),
    (bytes(range(256)) * 4, "a binary file, not YAML text"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)), "not UTF-8 text"),
    ("\ufeff".encode() + OK.encode(), None),  # a BOM is fine
])
def test_suite_that_is_not_utf8_text_is_one_line(data, message, tmp_path, capsys, monkeypatch):
    path = tmp_path / "suite.yaml"
    path.write_bytes(data)
    code, err = _validate(capsys, monkeypatch, path)
    if message is None:
        assert code == 0, err
    else:
        assert code == 2 and one_line_error(err) and message in err, err


NUMBERS = {
    "bool_for_int": (OK.replace("epochs: 1", "epochs: true"), "train.epochs: Input should be a valid integer, got True"),
    "bool_rank": (OK.replace("rank: 2", "rank: true"), "methods.0.params.rank: method 'lmf': 'rank' must be int"),
    "string_rank": (OK.replace("rank: 2", "rank: '2'"), "methods.0.params.rank"),
    "bool_dataset_param": (OK.replace("dim: 4", "dim: true"), "task.params.dim: dataset 'synthetic': 'dim' must be int"),
    "inf": (OK.replace("epochs: 1", "epochs: 1, lr: .inf"), "'.inf' is not a finite number"),
    "nan": (OK.replace("dim: 4", "dim: 4, noise: .nan"), "'.nan' is not a finite number"),
    "overflow_string": (OK.replace("epochs: 1", "epochs: 1, lr: '1e309'"), "train.lr"),
    "huge_int": (OK.replace("dims: [4]", "dims: [100000000000000000000000]"), "too large"),
    "huge_dataset": (OK.replace("n_train: 120", "n_train: 100000000000000"),
                     "task: dataset 'synthetic': its arrays need at least"),
    "huge_model": (OK.replace("dims: [4]", "dims: [1000000]").replace("- method: lmf\n    params: {rank: 2}",
                                                                      "- method: tfn"),
                   "methods.0: trial tfn · dims 1000000x1000000x1000000"),
    "overflowing_model": (OK.replace("dims: [4]", "dims: [[1000000000000000, 1000000000000000, 1000000000000000]]")
                          .replace("- method: lmf\n    params: {rank: 2}", "- method: tfn"), "2^63"),
    "empty_suite_axis": (OK.replace("dims: [4]", "dims: [4]\n  rank: []"), "sweep.rank: an empty sweep axis"),
    "empty_method_axis": (OK.replace("params: {rank: 2}", "sweep: {rank: []}"), "methods.0.sweep.rank: an empty"),
    "unknown_suite_axis": (OK.replace("dims: [4]", "dims: [4]\n  rnak: [1, 2]"),
                           "sweep.rnak: no method in this suite takes 'rnak' (did you mean 'rank'?)"),
    "unknown_method_axis": (OK.replace("params: {rank: 2}", "sweep: {rnak: [1]}"), "methods.0.sweep.rnak"),
    "no_train_workers": (OK.replace("sweep:", "execution: {train_workers: 0}\nsweep:"), "execution.train_workers"),
    "word_train_workers": (OK.replace("sweep:", "execution: {train_workers: many}\nsweep:"),
                           "execution.train_workers"),
}


@pytest.mark.parametrize("case", sorted(NUMBERS))
def test_numbers_the_schema_refuses_before_allocating(case, write_suite, capsys, monkeypatch):
    text, message = NUMBERS[case]
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err), err
    assert message in err and "suite.yaml:" in err, err


def test_memory_estimate_names_trial_and_size(write_suite, capsys, monkeypatch):
    """The refusal is a closed-form estimate against the machine's memory: with a tiny machine, a small model too."""
    import mmbench.fits as fits

    monkeypatch.setattr(fits, "machine_bytes", lambda device: (1000, "this machine has"))
    code, err = _validate(capsys, monkeypatch, write_suite(OK))
    assert code == 2 and "task: dataset 'synthetic': its arrays need at least" in err  # the data, first
    monkeypatch.setattr(fits, "check_dataset", lambda nbytes, what: None)
    code, err = _validate(capsys, monkeypatch, write_suite(OK))
    assert code == 2 and one_line_error(err)
    assert "trial lmf(rank=2) · dims 4x4x4" in err and "parameters and a batch of 128 need at least" in err
    assert "1000 B" in err


def test_a_batch_that_cannot_fit_is_refused_naming_the_trial(write_suite, capsys, monkeypatch):
    text = OK.replace("latency: null", "latency: {batch_sizes: [1, 100000000000000]}")
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err)
    assert "trial lmf(rank=2) · dims 4x4x4" in err and "a batch of 100000000000000" in err, err


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../../x", "-rf"])
def test_suite_names_cannot_steer_paths(name, write_suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(OK.replace("name: hostile", f"name: '{name}'")),
                       "--out", out)
    assert code == 2 and one_line_error(err) and "suite.yaml:1: name:" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]


def test_the_run_directory_is_checked_to_lie_inside_out(tmp_path):
    from mmbench.errors import UserError
    from mmbench.store import RunDir

    with pytest.raises(UserError, match="outside the results folder"):
        RunDir.create(tmp_path / "out", "..")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("label, bad", [("a\\nb", "'\\n'"), ("a | b", "'|'"), ("x\\tz", "'\\t'"), ("  ", "blank")])
def test_labels_that_break_tables_are_refused_with_their_line(label, bad, write_suite, capsys, monkeypatch):
    text = OK.replace("- method: lmf", f'- method: lmf\n    label: "{label}"')
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err) and "suite.yaml:11: methods.0.label:" in err and bad in err, err
    text = OK.replace("dataset: synthetic", f'dataset: synthetic\n  label: "{label}"')
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and "task.label:" in err, err


def test_two_methods_with_one_label_are_refused(write_suite, capsys, monkeypatch):
    text = OK + "  - method: early\n    label: same\n  - method: late\n    label: same\n"
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err)
    assert "suite.yaml:15: methods.2.label: label 'same' is already methods.1's (line 13)" in err, err



@pytest.mark.parametrize("value", ['"false"', '"no"', "0", '"true"', "1"])
def test_a_pickle_is_never_opened_unless_allow_pickle_is_the_boolean_true(value, write_suite, tmp_path, capsys,
                                                                           monkeypatch):
    marker = tmp_path / "PWNED"
    payload = tmp_path / "data.pkl"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload.write_bytes(pickle.dumps({"train": Payload()}))
    text = OK.replace("dataset: synthetic", "dataset: affect").replace(
        "{interaction: synergy, modalities: 3, dim: 4, n_train: 120, n_val: 60, n_test: 60}",
        f"{{path: {payload}, allow_pickle: {value}}}")
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err)
    assert "task.params.allow_pickle" in err and "must be bool" in err, err
    assert not marker.exists()


def test_affect_data_as_npz_needs_no_pickle(write_suite, tmp_path, capsys, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("valid", 20), ("test", 20)):
        for m, d in (("text", 5), ("audio", 3), ("vision", 4)):
            arrays[f"{split}.{m}"] = rng.standard_normal((n, 6, d)).astype(np.float32)
        arrays[f"{split}.labels"] = rng.uniform(-3, 3, (n, 1, 1))
    np.savez(tmp_path / "mosi.npz", **arrays)
    text = OK.replace("dataset: synthetic", "dataset: affect").replace(
        "{interaction: synergy, modalities: 3, dim: 4, n_train: 120, n_val: 60, n_test: 60}",
        f"{{path: {tmp_path / 'mosi.npz'}}}").replace("method: lmf\n    params: {rank: 2}", "method: late")
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 0, err


def test_the_tiny_suite_still_validates(write_suite, capsys, monkeypatch):
    code, err = _validate(capsys, monkeypatch, write_suite(TINY_SUITE))
    assert code == 0, err


def test_a_label_equal_to_another_methods_own_is_refused(write_suite, capsys, monkeypatch):
    text = OK + "  - method: early\n    label: late\n  - method: late\n"
    code, err = _validate(capsys, monkeypatch, write_suite(text))
    assert code == 2 and one_line_error(err)
    assert "methods.2.method: label 'late' is also methods.1's" in err, err
