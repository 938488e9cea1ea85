"""The command line: parse, call the library, print. Every UserError becomes one line on stderr and exit code 2."""
from __future__ import annotations

import json
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmbench import interrupt
from mmbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal fusion methods: accuracy, parameters, FLOPs, latency and memory.")
err = Console(stderr=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


class Registry(str, Enum):
    methods = "methods"
    datasets = "datasets"


@app.command()
def run(suite: Path = typer.Argument(..., help="Suite YAML file."),
        out: Path = typer.Option(Path("results"), "--out", help="Results folder; the run goes to OUT/<suite>/<run-id>/."),
        device: Optional[Device] = typer.Option(None, "--device", help="Overrides the suite's measure.device."),
        quick: bool = typer.Option(False, "--quick", help="Reduced budget (the suite's `quick:` block) for smoke runs."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document (run dir, rows) and nothing else."),
        db: Optional[Path] = typer.Option(None, "--db", help="History database [default: OUT/history.sqlite]."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Finish this run directory: skip the trials it "
                                              "already holds, run the rest into it."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="With --resume: also re-run trials recorded "
                                          "as failed (error, oom, nan, timeout, crashed)."),
        drop_damaged: bool = typer.Option(False, "--drop-damaged", help="With --resume: a damaged line in the results "
                                          "ends what is kept; the trials after it run again."),
        workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Run trials in N worker processes "
                                              "(0: in this process) [default: the suite's; else 0 on CPU, one per visible GPU on CUDA, "
                                              "each pinned to its GPU]."),
        isolate: bool = typer.Option(False, "--isolate", help="Run trials in a worker process (= --workers 1 unless "
                                     "more are asked): a crash or hang costs one trial, not the run."),
        trial_timeout: Optional[float] = typer.Option(None, "--trial-timeout", min=0.001, help="End a trial still "
                                                      "running after SECONDS (status timeout); implies --isolate."),
        executor_kind: Optional[ExecutorKind] = typer.Option(None, "--executor", help="Where trials run: local "
                                                             "(this machine) or ray (a Ray cluster; pip install "
                                                             "'mmbench[ray]') [default: the suite's execution.executor]."),
        address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: the cluster (auto, "
                                              "HOST:PORT, ray://HOST:PORT) [default: RAY_ADDRESS, else the suite's "
                                              "execution.address, else a Ray started here for the run]."),
        profile: bool = typer.Option(False, "--profile", help="Also write a torch.profiler trace of each trial's "
                                     "timed calls (after its timings, apart from them) to RUN_DIR/profiles/<trial "
                                     "id>.json (Chrome trace: open in Perfetto), its top operators in samples.jsonl.")):
    """Run a suite: measure every trial, write results and a report, record the run in the history."""
    from mmbench.suite import load_suite

    if (retry_failed or drop_damaged) and resume is None:
        raise UserError(f"{'--retry-failed' if retry_failed else '--drop-damaged'} needs --resume RUN_DIR")
    interrupt.on_sigterm()  # (again: main() installed it) a SIGTERM while loading says so too

    def again(run_dir: Path | None, db: Path | None = None, out: Path = out) -> str:
        cmd = ["mmbench", "run", str(suite)] + (["--resume", str(run_dir)] if run_dir else ["--out", str(out)])
        cmd += (["--quick"] if quick else []) + (["--device", device.value] if device else [])
        cmd += (["--workers", str(workers)] if workers is not None else []) + (["--isolate"] if isolate else [])
        cmd += (["--trial-timeout", f"{trial_timeout:g}"] if trial_timeout is not None else [])
        cmd += ["--drop-damaged"] if drop_damaged else []
        cmd += (["--executor", executor_kind.value] if executor_kind else []) + (["--address", address] if address
                                                                               else [])
        cmd += ["--db", str(db)] if db is not None and db != out / "history.sqlite" else []
        cmd += ["--profile"] if profile else []
        return shlex.join(cmd)

    try:
        run_dir, db = _run(suite, out, device, quick, as_json, db, resume, retry_failed, drop_damaged, workers,
                           isolate, trial_timeout, executor_kind, address, again, profile)
    except KeyboardInterrupt:  # before the run directory was touched: nothing to mark
        what = f"Resume with:\n  {again(resume, db)}" if resume else f"Start it again with:\n  {again(None, db)}"
        err.print(f"[yellow]interrupted[/] before any trial ran; nothing was written. {what}", highlight=False,
                  soft_wrap=True)
        _said_interrupted()
        raise typer.Exit(143 if interrupt.terminated else 130)
    finally:
        if resume is not None:
            from mmbench.store import disown

            disown(resume)
    rows = run_dir.rows()
    if as_json:
        typer.echo(json.dumps({"run_dir": str(run_dir.path), "state": run_dir.meta()["state"], "rows": rows},
                              default=str))
        return
    _summary(rows)
    _out().print(f"results: [bold]{run_dir.path}[/] (results.csv, report.md, report.html); history: {db}")


def _run(suite, out, device, quick, as_json, db, resume, retry_failed, drop_damaged, workers, isolate, trial_timeout,
         executor_kind, address, again, profile=False):
    from mmbench.suite import load_suite

    s = load_suite(suite, quick=quick)  # read and checked before torch loads: a bad file answers at once
    from mmbench.execute import ExecutorOptions
    from mmbench.run import RunInterrupted, check_destination, prepare, run_suite

    out, db = check_destination(s, out, db, resume, quick, drop_damaged)  # --resume: this process owns it from now
    options = ExecutorOptions(executor=executor_kind.value if executor_kind else None, workers=workers,
                              isolate=isolate, trial_timeout=trial_timeout, address=address)
    prepared = prepare(s, device.value if device else None, executor=options)
    if profile:
        from mmbench import profiling

        prepared = profiling.enable(prepared)
    for warning in prepared.warnings:
        err.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
    _data_notes(prepared)
    if prepared.contention_note and not as_json:
        err.print(f"[yellow]note[/]: {prepared.contention_note}")
    import contextlib

    # --json: stdout holds the one JSON document; anything else printed meanwhile (a user module, Ray's error
    # messages about dead workers) goes to stderr.
    with _RichProgress(len(prepared.trials), enabled=not as_json) as progress, \
            contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout):
        try:
            run_dir = run_suite(prepared, out, suite_text=suite.read_text(), quick=quick, progress=progress, db=db,
                                resume=resume, retry_failed=retry_failed, drop_damaged=drop_damaged)
        except RunInterrupted as exc:
            progress.bar.stop()
            err.print(f"[yellow]interrupted[/] while {exc.phase}, after {exc.done} of {exc.total} trials; the run is "
                      f"marked interrupted and every finished trial is recorded in {exc.run.path}. Resume with:\n"
                      f"  {again(exc.run.path, db, out)}", highlight=False, soft_wrap=True)
            _said_interrupted()
            raise typer.Exit(143 if interrupt.terminated else 130)
    return run_dir, db


@app.command()
def validate(suite: Path = typer.Argument(..., help="Suite YAML file."),
             quick: bool = typer.Option(False, "--quick", help="Validate the --quick variant.")):
    """Check a suite without running it; print how many trials it expands to."""
    from mmbench.suite import load_suite

    s = load_suite(suite, quick=quick)  # before torch loads (mmbench.run imports it): a bad file answers at once
    from mmbench.run import prepare

    prepared = prepare(s)
    for warning in prepared.warnings:
        err.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
    _data_notes(prepared)
    methods = len({t.label for t in prepared.trials})
    typer.echo(f"{suite}: ok, {len(prepared.trials)} trials ({methods} method configurations, "
               f"{len(prepared.tasks)} task(s), device {prepared.device})")


def _data_notes(prepared) -> None:
    """What a loader guessed about the user's files (a header skipped, labels remapped): said on stderr, and kept in
    the run's tasks.json."""
    for data in prepared.tasks.values():
        for note in data.info.get("notes", []):
            err.print(f"[yellow]note[/]: {escape(data.name)}: {escape(note)}", highlight=False, soft_wrap=True)


@app.command("list")
def list_(what: str = typer.Argument(..., help="methods or datasets", metavar="WHAT")):
    """List registered methods or datasets."""
    from mmbench.errors import closest

    choices = [r.value for r in Registry]
    if what not in choices:
        raise UserError(f"cannot list '{what}'{closest(what, choices)}: choose {' or '.join(choices)}")
    what = Registry(what)
    table = Table(box=None, header_style="bold")
    if what is Registry.methods:
        from mmbench import methods

        for col in ("method", "family", "inputs", "modalities", "rank", "description"):
            table.add_column(col)
        for name in methods.available():
            m = methods.info(name)
            hi = m.max_modalities
            mods = f"{m.min_modalities}+" if hi is None else (f"{hi}" if hi == m.min_modalities else f"{m.min_modalities}-{hi}")
            table.add_row(name, m.family, m.inputs, mods, m.rank_param or "—", escape(m.description))
    else:
        from mmbench import data

        table.add_column("dataset")
        table.add_column("description")
        for name in data.available():
            table.add_row(name, escape(data.info(name).description))
    _out().print(table)


class ReportFormat(str, Enum):
    md = "md"
    html = "html"


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="One or more run directories (several: one comparison)."),
           fmt: ReportFormat = typer.Option(ReportFormat.html, "--format", help="html (self-contained) or md."),
           out: Optional[Path] = typer.Option(None, "--out", help="Output file [default: RUN_DIR/report.FMT for one "
                                              "run, ./comparison.FMT for several]."),
           db: Optional[Path] = typer.Option(None, "--db", help="History database: adds its trend plot when given.")):
    """Write a report (tables and figures) of one run, or of several merged into one comparison."""
    from mmbench.report import make_report

    path = make_report(run_dirs, fmt.value, out, db)
    typer.echo(str(path))


@app.command()
def predict(suite: Path = typer.Argument(..., help="Suite YAML file: its trials are the configurations estimated."),
            from_run: Path = typer.Option(..., "--from", help="Run directory whose rows the scaling laws are fitted "
                                          "on."),
            quick: bool = typer.Option(False, "--quick", help="The suite's --quick variant."),
            every: bool = typer.Option(False, "--all", help="Also the trials the run holds (to set estimates beside "
                                       "what was measured)."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON document and nothing else.")):
    """Estimate the costs of a suite's configurations that a run did not measure, from the run's scaling laws."""
    from mmbench import vocabulary as V
    from mmbench.predict import predict_suite

    preds = predict_suite(suite, from_run, quick=quick, every=every)
    if as_json:
        typer.echo(json.dumps({"from": str(from_run), "predictions": [p.to_dict() for p in preds]}, indent=1))
        return
    if not preds:
        typer.echo(f"every trial of {suite} is in {from_run}: nothing to predict (--all to estimate them anyway)")
        return
    costs = list(dict.fromkeys((e.key, e.cost) for p in preds for e in p.estimates))
    table = Table(title=f"predicted from {from_run} (95% prediction intervals; * extrapolated beyond the sizes fitted)",
                  header_style="bold")
    for col in ("task", "method", "dims", "size"):
        table.add_column(col)
    for key, c in costs:
        table.add_column(f"{key} ({V.column(c).kind.unit})", justify="right")
    for p in preds:
        cells = {e.key: f"{e.value:.3g} [{e.low:.3g}–{e.high:.3g}]{' *' if e.extrapolated else ''}"
                         + (f" (measured {e.measured:.3g})" if e.measured is not None else "") for e in p.estimates}
        size = "—" if p.size is None else f"{p.size_name} = {p.size:.4g}"
        table.add_row(p.task, p.label, p.dims, size, *[cells.get(key, "—") for key, _ in costs])
    _out().print(table)
    for p in (p for p in preds if p.why_none):
        err.print(f"no estimate for {escape(p.label)} · {p.dims}: {escape(p.why_none)}", highlight=False)


@app.command()
def history(suite: Optional[str] = typer.Option(None, "--suite", help="Suite name; without it: the recorded runs."),
            trial: Optional[str] = typer.Option(None, "--trial", help="Trial id (or a prefix of it)."),
            metric: str = typer.Option("fusion_latency_ms_b1", "--metric", help="A results column."),
            last: int = typer.Option(10, "--last", min=1, help="Show the last N runs."),
            db: Optional[Path] = typer.Option(None, "--db", help="History database [default: results/history.sqlite, "
                                              "else the one OUT/history.sqlite under this folder]."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
            record: Optional[list[Path]] = typer.Option(None, "--record", help="Record this run directory in the "
                                                        "database first (again if it is there); repeatable."),
            accept: Optional[str] = typer.Option(None, "--accept", help="Accept the regressions of this run (run "
                                                 "directory or SUITE/RUN key): a meant change; the run joins the "
                                                 "baselines again."),
            why: Optional[str] = typer.Option(None, "--why", help="With --accept: why the change is meant "
                                              "(recorded with who and when).")):
    """Show the recorded runs, or one metric's trend over a suite's runs (a row per trial, a column per run)."""
    from mmbench import history as H

    # --record without --db: the database of the run's own results folder, where `mmbench run` records it
    db = db or (record[0].resolve().parent.parent / "history.sqlite" if record else _find_db())
    for run_dir in record or []:
        H.record_run(db, run_dir)
        if not as_json:
            err.print(f"recorded {run_dir} in {db}", highlight=False)
    if accept is not None:
        if not why:
            raise UserError("--accept needs --why: the reason is kept with the acceptance")
        v = H.accept(db, accept, why)
        err.print(f"accepted {v.regressions} regression(s) of {v.run_key} ({v.accepted_by}, {v.accepted}): it "
                  "joins the baselines again", highlight=False)
        return
    if why is not None:
        raise UserError("--why goes with --accept")

    if suite is None:
        runs = H.list_runs(db)
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in runs]))
            return
        table = Table(title=f"runs in {db}", header_style="bold")
        for col in ("suite", "run", "state", "started", "git sha", "environment", "trials", "verdict"):
            table.add_column(col)
        for r in runs:
            table.add_row(r.suite, r.run_key.split("/", 1)[1], r.state, r.started or "?", (r.git_sha or "?")[:12],
                          r.fingerprint, str(r.trials), r.verdict or "—")
        _out().print(table)
        return
    series = H.trend(db, suite, metric, trial, last)
    counted = _counts_beside(db, suite, metric, trial, last)  # a timing's instruction count, where recorded
    if as_json:
        typer.echo(json.dumps({"suite": suite, "metric": metric, "trials": [
            {"trial_id": tid, "label": label, "points": [p.__dict__ for p in pts],
             **({"instructions": [p.__dict__ for p in counted[1].get((tid, label), [])]} if counted else {})}
            for (tid, label), pts in series.items()]}))
        return
    runs = list(dict.fromkeys(p.run_key for pts in series.values() for p in pts))
    beside = f" · {counted[0]} (instructions per call)" if counted else ""
    table = Table(title=f"{suite}: {metric}{beside} over the last {len(runs)} run(s)", header_style="bold")
    table.add_column("trial")
    table.add_column("method · dims")
    for key in runs:
        table.add_column(key.split("/", 1)[1], justify="right")
    for (tid, label), pts in series.items():
        by_run = {p.run_key: p for p in pts}
        cells = [("—" if by_run[k].value is None else f"{by_run[k].value:.4g}") if by_run[k].status == "ok"
                 else by_run[k].status if k in by_run else "" for k in runs]
        if counted:
            n = {p.run_key: p.value for p in counted[1].get((tid, label), [])}
            cells = [f"{c} · {_compact(n[k])}" if n.get(k) is not None else c for c, k in zip(cells, runs)]
        table.add_row(tid, escape(label), *cells)
    _out().print(table)


def _counts_beside(db, suite: str, metric: str, trial, last: int):
    """(column, trend) of the instruction count of a timing's calls, when the history holds it; else None."""
    from mmbench import history as H
    from mmbench import vocabulary as V

    col = V.counted_by(metric)
    if col is None:
        return None
    try:
        return col, H.trend(db, suite, col, trial, last)
    except UserError:  # not counted in this suite's runs
        return None


def _compact(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{unit}"
    return f"{v:.4g}"


def _find_db() -> Path:
    """The history a command reads when --db is not given (history.find_db), with its note printed."""
    from mmbench.history import find_db

    db, note = find_db()
    if note:
        err.print(f"[yellow]note[/]: {note}", highlight=False)
    return db


@app.command()
def compare(baseline: str = typer.Argument(..., help="Run directory, or history:SUITE[:N] (median of the last N "
                                           "runs on the same environment; N=5)."),
            current: str = typer.Argument(..., help="Run directory (or history:SUITE[:N])."),
            threshold: str = typer.Option("10%", "--threshold", help="Smallest change of latency/memory that counts."),
            allowance: str = typer.Option("10%", "--allowance", help="Two single runs: a timing must also move beyond "
                                          "threshold + this (the run-to-run spread they cannot show)."),
            alpha: float = typer.Option(0.01, "--alpha", min=1e-9, max=0.5, help="Significance level of the test."),
            as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
            markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write a markdown summary here "
                                                    "(ready for a CI job summary)."),
            db: Optional[Path] = typer.Option(None, "--db", help="History database (for history:) [default: as "
                                              "`history` finds it]."),
            instr_threshold: str = typer.Option("1%", "--instr-threshold", help="Smallest change of an instruction "
                                                "count that counts (counts repeat to ~0.1% run to run)."),
            partial: bool = typer.Option(False, "--partial", help="Compare a run that is not complete (running, "
                                         "interrupted) on the trials it holds; without it such a run is refused.")):
    """Compare two runs trial by trial; exit 1 when anything regressed, 0 otherwise, 2 for bad input or when
    (nearly) nothing was comparable."""
    from mmbench import compare as C
    from mmbench.store import atomic_write

    thr = C.parse_threshold(threshold)
    allow = C.parse_threshold(allowance, "--allowance")
    if db is None:
        from mmbench.history import DEFAULT_DB

        db = _find_db() if any(side.startswith("history:") for side in (baseline, current)) else DEFAULT_DB
    ithr = C.parse_threshold(instr_threshold, "--instr-threshold")
    result = C.judge(baseline, current, db, partial=partial, threshold=thr, alpha=alpha, allowance=allow,
                     instr_threshold=ithr)
    if markdown is not None:
        if not markdown.parent.exists():
            raise UserError("output folder does not exist", file=str(markdown.parent))
        atomic_write(markdown, C.to_markdown(result))
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _compare_table(result)
    if result.refusal:  # an empty comparison must not pass
        raise UserError(result.refusal)
    raise typer.Exit(result.exit_code)


def _compare_table(result) -> None:
    from mmbench import compare as C

    shown = [e for e in result.entries if e.state != C.UNCHANGED]
    table = Table(title=f"{result.suite}: {result.baseline} → {result.current}", header_style="bold")
    for col in ("state", *C.TABLE):
        table.add_column(col, justify="right" if col in C.NUMERIC else "left")
    colour = {C.REGRESSED: "red", C.FAILED: "red", C.IMPROVED: "green", C.NOISE: "yellow"}
    for e in shown:
        trial, method, *middle, detail = C.cells(e)
        table.add_row(f"[{colour.get(e.state, 'default')}]{e.state}[/]", trial, escape(method), *middle,
                      escape(detail))
    out = _out()
    for note in result.notes:
        out.print(f"[yellow]note[/]: {escape(note)}")
    if shown:
        out.print(table)
    n = len(result.regressions)
    part = "[yellow]PARTIAL comparison (a run that is not complete)[/] · " if any(
        note.split(": ", 1)[-1].startswith("PARTIAL") for note in result.notes) else ""
    out.print(f"{part}[{'red' if n else 'green'}]{n} regression(s)[/] · {escape(result.counts_text()) or 'nothing compared'} "
              f"(threshold {result.threshold * 100:g}%, p < {result.alpha:g}, two-run allowance "
              f"{result.allowance * 100:g}%)")


def _out() -> Console:
    # Piped output gets a wide table rather than rich's 80-column default.
    return Console() if sys.stdout.isatty() else Console(width=220)


def _summary(rows: list[dict]) -> None:
    from mmbench import vocabulary as V

    table = Table(title="mmbench results", header_style="bold")
    lat = {b: c for b in V.batch_sizes(rows[0] if rows else ()) if (c := V.column_of("fusion_latency", b)) in rows[0]}
    lat_cols = list(lat.values())
    for col in ("task", "method", "dims", "status", "acc", "params", "fusion params", "fusion FLOPs",
                *[f"fusion ms b{b}" for b in lat]):
        table.add_column(col, justify="left" if col in ("task", "method", "dims", "status") else "right")
    for r in rows:
        sd = r.get("acc_std")
        acc = (f"{r['acc_mean']:.3f}±{'—' if sd is None else f'{sd:.3f}'}") if "acc_mean" in r else "—"
        status = "ok (did not learn)" if r["status"] == "ok" and r.get("did_not_learn") else r["status"]
        table.add_row(r["task"], r["label"], r["dims"], status, acc, _n(r.get("params")),
                      _n(r.get("fusion_params")), _n(r.get("fusion_flops")),
                      *[f"{r[c]:.4g}" if c in r else "—" for c in lat_cols])
    _out().print(table)
    flagged = [r for r in rows if r.get("contended")]
    if flagged:
        worst = max(flagged, key=lambda r: max((v for k, v in r.items() if "_wait_b" in k and isinstance(v, float)),
                                                 default=0.0))
        _out().print(f"[yellow]{len(flagged)} of {len(rows)} rows have timings measured while the process waited for "
                     f"a CPU[/] (flagged `contended`; compare treats them as noise), e.g. {escape(worst['label'])} "
                     f"{worst['dims']}: {escape(worst['contended_why'].split('; ')[0])}", highlight=False)


def _n(v) -> str:
    return "—" if v is None else f"{v:,}"


class _RichProgress:
    """A rich progress bar over trials on stderr, showing the trial in flight."""

    def __init__(self, total: int, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err, disable=not enabled, transient=False)
        self.task = self.bar.add_task("trials", total=total)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def skipped(self, n: int) -> None:
        self.bar.console.print(f"resuming: {n} trial(s) already recorded")
        self.bar.advance(self.task, n)

    def note(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(escape(text), highlight=False)

    def start(self, trial) -> None:
        doing = {"costs": "measuring · ", "train": "training · "}.get(getattr(trial, "part", None), "")
        self.bar.update(self.task, description=f"{doing}{trial.task_label} · {trial.label} · dims "
                                               f"{'x'.join(map(str, trial.dims))}")

    def done(self, trial, result) -> None:
        if result.row["status"] != "ok":
            self.bar.console.print(f"[red]{result.row['status']}[/]: {trial.label} {list(trial.dims)} "
                                   f"{result.row['error']}")
        self.bar.advance(self.task)


_SAID_INTERRUPTED = False  # the run command said where it stopped: main adds nothing


def _said_interrupted() -> None:
    global _SAID_INTERRUPTED
    _SAID_INTERRUPTED = True


def main() -> None:
    """Entry point: user errors are one line and exit code 2, never a traceback."""
    interrupt.on_sigterm()  # first: a SIGTERM at any instant says where it stopped
    try:
        _main()
    except SystemExit:
        interrupt.said_all()
        raise
    interrupt.said_all()


def _main() -> None:
    global _SAID_INTERRUPTED
    _SAID_INTERRUPTED = False
    try:
        code = app(standalone_mode=False)  # without standalone mode click returns a typer.Exit's code
        if code == 130 and not _SAID_INTERRUPTED:  # typer's answer to a Ctrl-C or SIGTERM in a command: say so
            print("mmbench: interrupted", file=sys.stderr)
            code = 143 if interrupt.terminated else 130
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        print(f"mmbench: error: {exc.render()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mmbench: interrupted", file=sys.stderr)
        sys.exit(143 if interrupt.terminated else 130)
    except Exception as exc:
        # click's usage errors (typer may vendor its own click, so matched by shape): one line, exit code 2
        if type(exc).__name__ == "Abort":
            if isinstance(exc.__cause__, EOFError):  # click turns any EOFError into Abort: not a Ctrl-C, a bug
                raise exc.__cause__
            print("mmbench: interrupted", file=sys.stderr)  # click's Abort is a KeyboardInterrupt in a command
            sys.exit(143 if interrupt.terminated else 130)
        if callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code"):
            print(f"mmbench: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
            sys.exit(2)
        raise
