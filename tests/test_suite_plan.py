"""Suite schema errors, sweep expansion and stable trial ids."""
import pytest

from mmbench.errors import UserError
from mmbench.plan import expand
from mmbench.run import prepare
from mmbench.suite import load_suite
from tests.conftest import TINY_SUITE


def test_tiny_suite_expands_rank_only_for_ranked_methods(write_suite):
    p = prepare(load_suite(write_suite(TINY_SUITE)))
    by = {}
    for t in p.trials:
        by.setdefault(t.method, []).append(t)
    # 2 dims values; lmf × 2 ranks; tfn and late are not duplicated across ranks
    assert len(by["tfn"]) == 2 and len(by["late"]) == 2 and len(by["lmf"]) == 4
    assert sorted({t.hparams["rank"] for t in by["lmf"]}) == [1, 2]
    assert "rank" not in by["tfn"][0].hparams
    assert by["tfn"][1].dims == (4, 4, 6)


def test_trial_ids_are_stable_and_distinct(write_suite):
    a = prepare(load_suite(write_suite(TINY_SUITE))).trials
    b = prepare(load_suite(write_suite(TINY_SUITE, "again.yaml"))).trials
    assert [t.id for t in a] == [t.id for t in b]
    assert len({t.id for t in a}) == len(a)
    # a changed budget changes every id; a changed label changes none
    c = prepare(load_suite(write_suite(TINY_SUITE.replace("epochs: 2", "epochs: 3"), "c.yaml"))).trials
    assert not {t.id for t in a} & {t.id for t in c}
    d = prepare(load_suite(write_suite(TINY_SUITE.replace("- method: late", "- method: late\n    label: L"),
                                       "d.yaml"))).trials
    assert [t.id for t in a] == [t.id for t in d]


def test_method_level_sweep_overrides_suite_level(write_suite):
    text = TINY_SUITE.replace("  - method: lmf\n", "  - method: lmf\n    sweep: {rank: [8], dims: [5]}\n")
    trials = [t for t in prepare(load_suite(write_suite(text))).trials if t.method == "lmf"]
    assert [(t.dims, t.hparams["rank"]) for t in trials] == [((5, 5, 5), 8)]


def test_quick_uses_quick_block_or_defaults(write_suite):
    s = load_suite(write_suite(TINY_SUITE + "quick: {train: {epochs: 1, seeds: [7]}}\n"), quick=True)
    assert s.train.epochs == 1 and s.train.seeds == [7]
    s = load_suite(write_suite(TINY_SUITE.replace("epochs: 2", "epochs: 8")), quick=True)
    assert s.train.epochs == 2 and s.train.seeds == [0]


@pytest.mark.parametrize("edit,key,line,words", [
    (("  dataset: synthetic\n", "  dataset: synthetic\n  colour: red\n"), "task.colour", 4, "unknown key"),
    (("train: {epochs: 2,", "train: {epochs: 0,"), "train.epochs", 5, "greater than 0"),
    (("  - method: late\n", "  - method: lfm\n"), "methods.2.method", 15, "did you mean 'lmf'"),
    (("  dims: [4, [4, 4, 6]]", "  dims: [4, [4, 0, 6]]"), "sweep.dims", 10, "positive"),
    (("  rank: [1, 2]", "  rank: [1, 0]"), "methods.1", 14, "rank must be positive"),
    (("  - method: tfn\n", "  - method: tfn\n    sweep: {rank: [2]}\n"), "methods.0.sweep.rank", 14, "no rank"),
    (("  - method: tfn\n", "  - method: tfn\n    params: {rank: 2}\n"), "methods.0.params.rank", 14, "no rank"),
    (("  dims: [4, [4, 4, 6]]", "  dims: [4, [4, 4]]"), "sweep.dims", 10, "3 modalities"),
    (("  - method: late\n", "  - method: late\n    params: {weighting: max}\n"), "methods.2", 15, "weighting"),
])
def test_bad_suites_name_key_line_and_problem(write_suite, edit, key, line, words):
    path = write_suite(TINY_SUITE.replace(*edit))
    with pytest.raises(UserError) as exc:
        prepare(load_suite(path))
    e = exc.value
    assert e.file == str(path) and e.key == key and e.line == line and words in e.message, e.render()
    assert "\n" not in e.render()


def test_malformed_yaml_and_missing_file(write_suite, tmp_path):
    with pytest.raises(UserError) as exc:
        load_suite(write_suite("name: x\nmethods: [\n  - a: b\n"))
    assert "malformed YAML" in exc.value.message and exc.value.line is not None
    with pytest.raises(UserError) as exc:
        load_suite(tmp_path / "nope.yaml")
    assert exc.value.message == "no such file"
