"""Users' own fusion modules: named as package.module:ClassName, measured through the same path as the built-ins."""
import csv
import pytest
import torch

from mmbench import methods
from mmbench.errors import UserError
from mmbench.examples.user_fusion import SumProductFusion
from mmbench.model import build
from mmbench.run import prepare
from mmbench.suite import load_suite
from tests.conftest import ROOT, TINY_SUITE, run_cli


@pytest.mark.parametrize("spec,words", [
    ("tests.no_such_module:X", "cannot import 'tests.no_such_module'"),
    ("tests.user_module_broken:X", "ImportError: this module needs a package"),
    ("tests.user_modules:Missing", "has no class 'Missing'"),
    ("tests.user_modules:NotAModule", "is not a torch.nn.Module subclass"),
    ("tests.user_modules:WrongConstructor", "must take (dims, out_dim, **hyperparams)"),
    ("tests.user_modules:NoForward", "does not define forward"),
    ("tests.user_modules:RaisesInConstructor", "its constructor raised RuntimeError: weights file missing"),
    ("tests.user_modules:BadInputsKind", "inputs must be 'vectors', 'sequences' or 'both'"),
    ("tests.user_modules:BadRankParam", "rank_param 'rnak' is not a constructor argument"),
])
def test_interface_violations_are_one_line_user_errors(spec, words):
    with pytest.raises(UserError) as exc:
        methods.create(spec, [3, 4], 2)
    assert words in exc.value.message and "\n" not in exc.value.render()


def test_a_suite_naming_a_bad_module_fails_at_plan_time_with_its_location(write_suite):
    text = TINY_SUITE.replace("  - method: late\n", "  - method: tests.user_modules:WrongConstructor\n")
    with pytest.raises(UserError) as exc:
        prepare(load_suite(write_suite(text)))
    assert exc.value.key == "methods.2.method" and exc.value.line == 15


def test_user_class_declarations_reach_the_plan(write_suite):
    """max_modalities refuses a 3-modality task at plan time; rank_param receives the suite's rank axis."""
    text = TINY_SUITE.replace("  - method: late\n", "  - method: tests.user_modules:PairOnlyWithAux\n")
    with pytest.raises(UserError, match="takes 2 modalities, got 3"):
        prepare(load_suite(write_suite(text)))
    text = TINY_SUITE.replace("  - method: late\n", "  - method: mmbench.examples.user_fusion:SumProductFusion\n")
    trials = [t for t in prepare(load_suite(write_suite(text, "b.yaml"))).trials if ":" in t.method]
    assert sorted({t.hparams["hidden"] for t in trials}) == [1, 2] and {t.rank for t in trials} == {1, 2}


def test_user_aux_loss_is_taken_through_the_model():
    model = build("tests.user_modules:PairOnlyWithAux", {}, [5, 6], [3, 4], 2)
    model([torch.randn(4, 5), torch.randn(4, 6)])
    aux = model.aux_loss()
    assert aux is not None and aux.dim() == 0 and aux > 0


def test_example_module_states_its_closed_form():
    m = methods.create("mmbench.examples.user_fusion:SumProductFusion", [3, 4, 5], 2, hidden=6)
    assert isinstance(m, SumProductFusion)
    assert sum(p.numel() for p in m.parameters()) == m.expected_params() == (4 + 5 + 6) * 6 + 7 * 2


def test_cli_bad_module_is_exit_2_one_line(write_suite, tmp_path):
    suite = write_suite(TINY_SUITE.replace("  - method: late\n", "  - method: tests.user_modules:NotAModule\n"))
    r = run_cli("run", str(suite), "--out", str(tmp_path / "res"), cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"mmbench: error: {suite}:15: methods.2.method: "
                                             "'tests.user_modules:NotAModule' is not a torch.nn.Module subclass"]
    assert not (tmp_path / "res").exists()


def test_the_example_user_suite_runs_through_the_same_measurement_path(tmp_path):
    from mmbench.run import run_suite

    path = ROOT / "suites" / "user_module.yaml"
    run = run_suite(prepare(load_suite(path, quick=True)), tmp_path, suite_text=path.read_text(), quick=True)
    rows = {row["method"]: row for row in csv.DictReader(open(run.path / "results.csv"))}
    user = rows["mmbench.examples.user_fusion:SumProductFusion"]
    assert user["status"] == "ok" and user["label"] == "sum-product (user)" and user["rank"] == "4"
    assert int(user["fusion_params"]) == SumProductFusion([8, 8, 8], 2, hidden=4).expected_params()
    assert int(user["fusion_flops"]) == 2 * (3 * 8 * 4 + 4 * 2)  # three projections and the output, at batch 1
    for col in ("acc_mean", "fusion_latency_ms_b1", "flops"):
        assert user[col] != ""
