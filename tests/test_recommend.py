"""The recommendation (report/decide.py): per cost, the cheapest configuration within one standard error of the most
accurate one; configurations at chance or flagged did-not-learn are never recommended."""
from mmbench.report import decide as D
from mmbench.report import make_report
from tests.fakerun import make_run


def row(key, dims, acc, *, std=0.005, se=0.007, params, lat, flagged=False, dnl=False):
    return {"_key": key, "dims": dims, "status": "ok", "acc_mean": acc, "acc_std": std, "acc_se": se,
            "chance_accuracy": 0.5, "params": params, "latency_ms_b256": lat, "latency_contended_b256": flagged,
            "did_not_learn": dnl}


def test_cheapest_within_one_se_of_the_best_per_cost_and_never_at_chance():
    rows = [row("tfn", "16", 0.898, params=552_516, lat=5.2),
            row("lmf(rank=1)", "8", 0.892, params=465, lat=0.30),      # within 0.007 of 0.898: the cheapest in params
            row("lmf(rank=4)", "8", 0.894, params=1_800, lat=0.07),    # within, and the fastest
            row("lmf(rank=2)", "4", 0.889, params=100, lat=0.01),      # 0.009 below the best: outside the bar
            row("late", "8", 0.502, params=50, lat=0.005),             # at chance, cheapest in everything
            row("early", "8", 0.895, params=60, lat=0.006, dnl=True)]  # flagged did-not-learn: never picked
    d = D.decide("t", rows)
    assert d.best.name == "tfn · 16" and abs(d.bar - (0.898 - 0.007)) < 1e-12
    picks = {r.cost: r.pick.name for r in d.recommended}
    assert picks == {"params": "lmf(rank=1) · 8", "latency_ms_b256": "lmf(rank=4) · 8"}
    assert {p.name for p in d.unlearned} == {"late · 8", "early · 8"}
    head, lines = D.recommendation_lines(d)
    assert head.startswith("One-standard-error rule") and "tfn · 16: acc 0.898, SE 0.007" in head
    assert "acc at least 0.891" in head and "late · 8" in head
    assert lines == ["lmf(rank=1) · 8 — acc 0.892 ± 0.007, within SE of the best 0.898: the cheapest by params",
                     "lmf(rank=4) · 8 — acc 0.894 ± 0.007, within SE of the best 0.898: the cheapest by latency b256"]
    assert D.recommendation_table(d) == [["params", "lmf(rank=1) · 8", "465", "552,516", "1,188×"],
                                         ["latency b256", "lmf(rank=4) · 8", "0.07 ms", "5.2 ms", "74.3×"]]
    # late (at chance) and early (did not learn) are on the front by being cheapest: folded apart, not hidden
    _, front, unlearned, _ = D.lines(d)
    assert [x.split(":")[0] for x in unlearned] == ["late · 8", "early · 8"]
    assert "late · 8: acc 0.502 ± 0.005, SE 0.007 (≈ chance)" in unlearned[0] and "(did not learn)" in unlearned[1]
    assert all(not x.startswith(("late", "early")) for x in front)


def test_a_flagged_timing_is_no_cost_to_recommend_by():
    rows = [row("tfn", "16", 0.898, params=552_516, lat=5.2),
            row("lmf", "8", 0.895, params=465, lat=0.07, flagged=True),
            row("lmf", "16", 0.896, params=900, lat=0.2)]
    picks = {r.cost: r.pick.name for r in D.decide("t", rows).recommended}
    assert picks == {"params": "lmf · 8", "latency_ms_b256": "lmf · 16"}
    # every timing within SE flagged: no recommendation by latency, and the report says so
    rows = [row("tfn", "16", 0.898, params=552_516, lat=5.2, flagged=True),
            row("lmf", "8", 0.895, params=465, lat=0.07, flagged=True)]
    d = D.decide("t", rows)
    assert [r.cost for r in d.recommended] == ["params"]
    assert "No recommendation by latency b256: no configuration within SE has it measured unflagged." \
        in D.recommendation_lines(d)[0]


def test_latency_is_recommended_within_each_place_it_was_measured_and_parameters_across_all():
    # a CPU run and a GPU run merged: the GPU's lmf is fastest overall, but a CPU latency is never set against it
    cpu = [{**row("tfn · cpu", "16", 0.898, params=552_516, lat=5.2), "_run": "cpu"},
           {**row("lmf · cpu", "8", 0.895, params=465, lat=0.30), "_run": "cpu"}]
    gpu = [{**row("tfn · gpu", "16", 0.897, params=552_516, lat=0.05), "_run": "gpu"},
           {**row("lmf · gpu", "8", 0.894, params=465, lat=0.02), "_run": "gpu"}]
    d = D.decide("t", cpu + gpu)
    picks = {(r.cost, r.where): (r.pick.name, r.best.name) for r in d.recommended}
    assert picks == {("params", ""): ("lmf · cpu · 8", "tfn · cpu · 16"),
                     ("latency_ms_b256", "cpu"): ("lmf · cpu · 8", "tfn · cpu · 16"),
                     ("latency_ms_b256", "gpu"): ("lmf · gpu · 8", "tfn · gpu · 16")}
    table = D.recommendation_table(d)
    assert ["latency b256 (cpu)", "lmf · cpu · 8", "0.3 ms", "5.2 ms", "17.3×"] in table
    assert ["latency b256 (gpu)", "lmf · gpu · 8", "0.02 ms", "0.05 ms", "2.5×"] in table
    # one place: no place named, as before
    assert {r.where for r in D.decide("t", cpu).recommended} == {""}


def test_lower_is_better_scores_use_the_bar_above_the_best():
    rows = [{"_key": k, "dims": "8", "status": "ok", "mae_mean": m, "mae_std": 0.01, "params": p}
            for k, m, p in (("a", 0.50, 1000), ("b", 0.505, 10), ("c", 0.53, 1))]
    d = D.decide("t", rows)
    assert d.best.name == "a · 8" and d.recommended[0].pick.name == "b · 8"
    assert "mae at most 0.510" in D.recommendation_lines(d)[0]


def test_everything_at_chance_recommends_nothing_and_says_so():
    rows = [row("late", "8", 0.501, params=50, lat=0.005), row("late", "16", 0.499, params=90, lat=0.006)]
    d = D.decide("t", rows)
    assert d.best is None and d.recommended == []
    head, lines = D.recommendation_lines(d)
    assert "every configuration is at chance" in head and lines == []


def test_reports_open_each_task_with_the_recommendation(tmp_path):
    run = make_run(tmp_path, "a")
    md = make_report([run], "md").read_text()
    html = make_report([run], "html").read_text()
    for text in (md, html):
        top = text[:text.index("Pareto front")]
        assert "Recommended" in top and "One-standard-error rule" in top
        assert "late · 4x4x4" in top  # named as never recommended (at chance)
