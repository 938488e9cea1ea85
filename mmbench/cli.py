"""The command line: parse, call the library, print. Every UserError becomes one line on stderr and exit code 2."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal fusion methods: accuracy, parameters, FLOPs, latency and memory.")
err = Console(stderr=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Registry(str, Enum):
    methods = "methods"
    datasets = "datasets"


@app.command()
def run(suite: Path = typer.Argument(..., help="Suite YAML file."),
        out: Path = typer.Option(Path("results"), "--out", help="Results folder; the run goes to OUT/<suite>/<run-id>/."),
        device: Optional[Device] = typer.Option(None, "--device", help="Overrides the suite's measure.device."),
        quick: bool = typer.Option(False, "--quick", help="Reduced budget (the suite's `quick:` block) for smoke runs."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document (run dir, rows) and nothing else.")):
    """Run a suite: measure every trial, write results and a report."""
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    s = load_suite(suite, quick=quick)
    prepared = prepare(s, device.value if device else None)
    with _RichProgress(len(prepared.trials), enabled=not as_json) as progress:
        try:
            run_dir = run_suite(prepared, out, suite_text=suite.read_text(), quick=quick, progress=progress)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: finished trials are recorded")
            raise typer.Exit(130)
    rows = run_dir.rows()
    if as_json:
        typer.echo(json.dumps({"run_dir": str(run_dir.path), "state": run_dir.meta()["state"], "rows": rows},
                              default=str))
        return
    _summary(rows)
    _out().print(f"results: [bold]{run_dir.path}[/] (results.csv, report.md)")


@app.command()
def validate(suite: Path = typer.Argument(..., help="Suite YAML file."),
             quick: bool = typer.Option(False, "--quick", help="Validate the --quick variant.")):
    """Check a suite without running it; print how many trials it expands to."""
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(suite, quick=quick))
    methods = len({t.label for t in prepared.trials})
    typer.echo(f"{suite}: ok, {len(prepared.trials)} trials ({methods} method configurations, "
               f"{len(prepared.tasks)} task(s), device {prepared.device})")


@app.command("list")
def list_(what: Registry = typer.Argument(..., help="methods or datasets")):
    """List registered methods or datasets."""
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


def _out() -> Console:
    # Piped output gets a wide table rather than rich's 80-column default.
    return Console() if sys.stdout.isatty() else Console(width=220)


def _summary(rows: list[dict]) -> None:
    table = Table(title="mmbench results", header_style="bold")
    lat_cols = sorted((k for k in rows[0] if k.startswith("fusion_latency_ms_b")) if rows else [],
                      key=lambda k: int(k.rsplit("b", 1)[1]))
    for col in ("task", "method", "dims", "status", "acc", "params", "fusion params", "fusion FLOPs",
                *[f"fusion ms b{c.rsplit('b', 1)[1]}" for c in lat_cols]):
        table.add_column(col, justify="left" if col in ("task", "method", "dims", "status") else "right")
    for r in rows:
        acc = f"{r['acc_mean']:.3f}±{r['acc_std']:.3f}" if "acc_mean" in r else "—"
        table.add_row(r["task"], r["label"], r["dims"], r["status"], acc, _n(r.get("params")),
                      _n(r.get("fusion_params")), _n(r.get("fusion_flops")),
                      *[f"{r[c]:.4g}" if c in r else "—" for c in lat_cols])
    _out().print(table)


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

    def start(self, index, total, trial) -> None:
        self.bar.update(self.task, description=f"{trial.task_label} · {trial.label} · dims {'x'.join(map(str, trial.dims))}")

    def done(self, index, total, trial, result) -> None:
        if result.row["status"] != "ok":
            self.bar.console.print(f"[red]{result.row['status']}[/]: {trial.label} {list(trial.dims)} "
                                   f"{result.row['error']}")
        self.bar.advance(self.task)


def main() -> None:
    """Entry point: user errors are one line and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"mmbench: error: {exc.render()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
