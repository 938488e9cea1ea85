"""Real-data loaders (digits, multiview, affect) on files the tests write; splits, standardisation, bad input."""
import json
import pickle

import numpy as np
import pytest

from mmbench import data
from mmbench.data.common import split_indices, standardise
from mmbench.errors import UserError
from tests.conftest import run_cli


# --- digits, splits, standardisation --------------------------------------------------------------------------------

@pytest.mark.parametrize("views,dims", [("left_right", [32, 32]), ("top_bottom", [32, 32]),
                                        ("quadrants", [16] * 4), ("pixels_features", [64, 24])])
def test_digits_views_dims_and_sizes(views, dims):
    t = data.load("digits", views=views)
    assert t.input_dims == dims and len(t.modalities) == len(dims)
    assert len(t.train) + len(t.val) + len(t.test) == 1797 and t.num_classes == 10
    assert set(np.unique(t.test.y)) == set(range(10))  # stratified: every class in the test split


def test_digits_left_right_halves_are_the_image_columns():
    from sklearn.datasets import load_digits

    t = data.load("digits", views="left_right", standardize=False)
    images = load_digits().images
    row = t.test.xs[0][0]
    # The unstandardised left view of a test row is the left 4 columns of some image with the same label.
    match = [i for i in range(len(images)) if np.array_equal(images[i][:, :4].reshape(-1), row)]
    assert match and all(load_digits().target[i] == t.test.y[0] for i in match)


def test_split_is_deterministic_by_seed_and_disjoint():
    a, b = split_indices(500, 3, 0.2, 0.2), split_indices(500, 3, 0.2, 0.2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = split_indices(500, 4, 0.2, 0.2)
    assert not np.array_equal(a[2], c[2])
    together = np.concatenate(a)
    assert len(together) == 500 and len(np.unique(together)) == 500
    t1, t2 = data.load("digits", seed=1), data.load("digits", seed=1)
    assert np.array_equal(t1.test.xs[0], t2.test.xs[0]) and np.array_equal(t1.test.y, t2.test.y)


def test_standardisation_is_fitted_on_train_only():
    rng = np.random.default_rng(0)
    train = [rng.normal(5.0, 2.0, (400, 3))]
    test = [rng.normal(9.0, 2.0, (400, 3))]  # shifted: a fit on test (or on all data) would centre it
    (tr, te), stats = standardise(train, test)
    assert np.allclose(tr[0].mean(0), 0, atol=1e-5) and np.allclose(tr[0].std(0), 1, atol=1e-4)
    assert np.allclose(stats[0]["mean"], train[0].mean(0))
    expected = (test[0].mean(0) - train[0].mean(0)) / train[0].std(0)
    assert np.allclose(te[0].mean(0), expected, atol=1e-4) and (te[0].mean(0) > 1.5).all()


def test_constant_train_feature_is_not_blown_up():
    (tr, te), _ = standardise([np.ones((10, 2))], [np.full((4, 2), 3.0)])
    assert np.isfinite(te[0]).all() and np.allclose(te[0], 2.0)


# --- multiview ------------------------------------------------------------------------------------------------------

def _write_multiview(root, n=120, fmt="npy", split=False, labels=None):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n) if labels is None else labels
    a = rng.normal(size=(n, 4)) + y[:, None]
    b = rng.normal(size=(n, 2)) - y[:, None]
    root.mkdir(parents=True, exist_ok=True)
    views = {}
    if fmt == "npy":
        np.save(root / "a.npy", a), np.save(root / "b.npy", b)
        views = {"a": "a.npy", "b": "b.npy"}
    elif fmt == "csv":
        with open(root / "a.csv", "w") as f:
            f.write("f0,f1,f2,f3\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in a))
        np.savetxt(root / "b.csv", b, delimiter=",")
        views = {"a": "a.csv", "b": "b.csv"}
    else:
        np.savez(root / "views.npz", a=a, b=b)
        views = {"a": {"file": "views.npz", "key": "a"}, "b": {"file": "views.npz", "key": "b"}}
    np.savetxt(root / "labels.csv", y, fmt="%d")
    manifest = {"views": views, "labels": "labels.csv"}
    if split:
        names = np.array(["train"] * (n - 40) + ["val"] * 20 + ["test"] * 20)
        (root / "split.csv").write_text("split\n" + "\n".join(names))
        manifest["split"] = "split.csv"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return a, b, y


@pytest.mark.parametrize("fmt", ["npy", "csv", "npz"])
def test_multiview_reads_each_format(tmp_path, fmt):
    a, b, y = _write_multiview(tmp_path / "mv", fmt=fmt)
    t = data.load("multiview", path=str(tmp_path / "mv"), standardize=False)
    assert t.modalities == ["a", "b"] and t.input_dims == [4, 2] and t.num_classes == 3
    assert len(t.train) + len(t.val) + len(t.test) == len(y)
    # Every loaded row is a row of the file (the CSV header skipped), with its own label.
    dist = np.abs(t.test.xs[0][:, None, :] - a[None, :, :]).max(-1)
    assert (dist.min(1) < 1e-5).all() and np.array_equal(y[dist.argmin(1)], t.test.y)


def test_multiview_split_file_is_used_and_relative_path_uses_base_dir(tmp_path):
    a, _, y = _write_multiview(tmp_path / "mv", split=True)
    t = data.load("multiview", path="mv", base_dir=str(tmp_path), standardize=False)
    assert (len(t.train), len(t.val), len(t.test)) == (80, 20, 20)
    assert np.allclose(t.test.xs[0], a[-20:]) and np.array_equal(t.test.y, y[-20:])
    assert t.info["split"] == "file split.csv"


def _error(fn) -> str:
    with pytest.raises(UserError) as exc:
        fn()
    msg = exc.value.render()
    assert "\n" not in msg
    return msg


def test_multiview_bad_inputs_name_the_file(tmp_path):
    root = tmp_path / "mv"
    _write_multiview(root)
    load = lambda: data.load("multiview", path=str(root))  # noqa: E731
    np.save(root / "b.npy", np.zeros((119, 2)))
    msg = _error(load)
    assert "b.npy" in msg and "119 rows" in msg and "120" in msg
    bad = np.zeros((120, 2))
    bad[7, 1] = np.nan
    np.save(root / "b.npy", bad)
    assert "b.npy" in (msg := _error(load)) and "NaN" in msg and "row 7" in msg
    np.save(root / "b.npy", np.zeros((120, 2)))
    labels = np.zeros(120)
    labels[5] = 1.5
    np.savetxt(root / "labels.csv", labels)
    assert "labels.csv" in (msg := _error(load)) and "not an integer class" in msg and "row 5" in msg
    np.savetxt(root / "labels.csv", np.stack([np.arange(120) % 3] * 2, 1), fmt="%d", delimiter=",")
    assert "labels.csv" in (msg := _error(load)) and "one label per row" in msg
    np.savetxt(root / "labels.csv", np.arange(120) % 3, fmt="%d")
    data.load("multiview", path=str(root))  # repaired: loads
    (root / "manifest.json").write_text(json.dumps({"views": {"a": "a.npy", "b": "gone.npy"}, "labels": "labels.csv"}))
    assert "gone.npy" in (msg := _error(load)) and "no such file" in msg
    assert "no such file" in _error(lambda: data.load("multiview", path=str(tmp_path / "nowhere")))


def test_multiview_labels_beyond_num_classes(tmp_path):
    root = tmp_path / "mv"
    _write_multiview(root)
    doc = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**doc, "num_classes": 2}))
    assert "out of range 0..1" in _error(lambda: data.load("multiview", path=str(root)))


# --- affect ---------------------------------------------------------------------------------------------------------

def _affect_doc(layout: str, n=(30, 10, 12), t=5, dims=(6, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    doc = {}
    for split, size in zip(("train", "valid", "test"), n):
        y = np.round(rng.uniform(-3, 3, size), 1)
        y[0] = 0.0
        part = {"text": rng.normal(size=(size, t, dims[0])), "audio": rng.normal(size=(size, t, dims[1])),
                "vision": rng.normal(size=(size, t, dims[2])), "id": np.arange(size)}
        if layout == "multibench":
            part["labels"] = y.reshape(size, 1, 1)
        else:
            part.update(regression_labels=y, classification_labels=(y > 0).astype(int),
                        raw_text=["x"] * size, text_bert=np.zeros((size, 3, t)))
        doc[split] = part
    return doc


@pytest.mark.parametrize("layout", ["multibench", "mmsa"])
def test_affect_reads_both_layouts(tmp_path, layout):
    doc = _affect_doc(layout)
    with open(tmp_path / "mosi.pkl", "wb") as f:
        pickle.dump(doc, f)
    t = data.load("affect", path="mosi.pkl", allow_pickle=True, base_dir=str(tmp_path), standardize=False)
    assert t.info["layout"] == layout and t.target == "regression" and t.num_classes == 1
    assert t.modalities == ["text", "audio", "vision"] and t.input_dims == [6, 3, 4] and t.kind == "vectors"
    assert (len(t.train), len(t.val), len(t.test)) == (30, 10, 12)  # the file's own split
    key = "labels" if layout == "multibench" else "regression_labels"
    assert np.allclose(t.test.y, np.asarray(doc["test"][key]).reshape(-1))
    assert np.allclose(t.test.xs[1], doc["test"]["audio"].mean(1), atol=1e-5)  # mean over time steps
    seq = data.load("affect", path=str(tmp_path / "mosi.pkl"), allow_pickle=True, reduce="none")
    assert seq.kind == "sequences" and seq.train.xs[0].shape == (30, 5, 6)


def test_affect_needs_explicit_pickle_opt_in_and_says_why(tmp_path):
    with open(tmp_path / "mosi.pkl", "wb") as f:
        pickle.dump(_affect_doc("mmsa"), f)
    msg = _error(lambda: data.load("affect", path=str(tmp_path / "mosi.pkl")))
    assert "allow_pickle: true" in msg and "runs code" in msg and "mosi.pkl" in msg


def test_affect_missing_file_unknown_layout_and_nan(tmp_path):
    assert "no such file" in _error(lambda: data.load("affect", path=str(tmp_path / "none.pkl"), allow_pickle=True))
    with open(tmp_path / "odd.pkl", "wb") as f:
        pickle.dump({"train": {"text": np.zeros((2, 2))}, "valid": {}, "test": {}}, f)
    msg = _error(lambda: data.load("affect", path=str(tmp_path / "odd.pkl"), allow_pickle=True))
    assert "layout not recognised" in msg and "odd.pkl" in msg
    doc = _affect_doc("multibench")
    doc["valid"]["audio"][3, 2, 1] = -np.inf  # COVAREP's -inf, as in the public MOSI features
    with open(tmp_path / "inf.pkl", "wb") as f:
        pickle.dump(doc, f)
    msg = _error(lambda: data.load("affect", path=str(tmp_path / "inf.pkl"), allow_pickle=True))
    assert "valid.audio" in msg and "inf" in msg and "row 3" in msg
    t = data.load("affect", path=str(tmp_path / "inf.pkl"), allow_pickle=True, nonfinite="zero")
    assert np.isfinite(t.val.xs[1]).all()


def test_bad_data_in_a_suite_is_one_line_exit_2_before_training(write_suite, tmp_path):
    root = tmp_path / "mv"
    _write_multiview(root)
    np.save(root / "b.npy", np.zeros((50, 2)))
    suite = write_suite("""\
        name: mv
        task: {dataset: multiview, params: {path: mv}}
        measure: {device: cpu, latency: null}
        sweep: {dims: [4]}
        methods: [{method: early}]
        """)
    out = tmp_path / "res"
    r = run_cli("run", str(suite), "--out", str(out), cwd=tmp_path.parent)  # relative to the suite, not the cwd
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "b.npy" in r.stderr and "50 rows" in r.stderr
    assert not out.exists()
