"""Reports read run directories only (and the history database): they need neither torch nor a GPU.

build.py gathers runs into tables (tables.py) and figures (plots.py); markdown.py and html.py render them.
"""
from __future__ import annotations

from pathlib import Path

from mmbench.errors import UserError

FORMATS = ("md", "html")


def write_report(run, db: str | Path | None = None) -> list[Path]:
    """report.md (+ figures/*.png) and report.html into a run directory. ``run``: a RunDir or a path."""
    from mmbench.report import html, markdown
    from mmbench.report.build import build
    from mmbench.store import atomic_write

    path = Path(getattr(run, "path", run))
    rep = build([path], db=db)
    _draw(rep)
    atomic_write(path / "report.md", markdown.render(rep, path / "figures", "figures"))
    atomic_write(path / "report.html", html.render(rep))
    return [path / "report.md", path / "report.html"]


def _draw(rep) -> None:
    from mmbench.report import plots

    plots.draw(rep.plots + rep.scaling_plots + rep.history)


def make_report(run_dirs: list[str | Path], fmt: str = "html", out: str | Path | None = None,
                db: str | Path | None = None) -> Path:
    """One report of one or several runs (merged into one comparison). Returns the file written.

    Default ``out``: report.<fmt> in the run directory for one run, comparison.<fmt> in the working directory for
    several. Markdown figures go to <out stem>_figures/ beside it.
    """
    from mmbench.report import html, markdown
    from mmbench.report.build import build
    from mmbench.store import atomic_write

    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}' (choose {' or '.join(FORMATS)})")
    if not run_dirs:
        raise UserError("give at least one run directory")
    rep = build(list(run_dirs), db=db)
    if out is None:
        out = Path(run_dirs[0]) / f"report.{fmt}" if len(run_dirs) == 1 else Path(f"comparison.{fmt}")
    out = Path(out)
    if out.is_dir():
        raise UserError("--out is a directory: give a file name", file=str(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # only now: runs that cannot be read leave nothing behind
    except OSError as exc:
        raise UserError(f"cannot create the output folder: {exc.strerror}", file=str(out.parent)) from None
    _draw(rep)
    if fmt == "html":
        atomic_write(out, html.render(rep))
    else:
        figs = out.parent / ("figures" if out.name == "report.md" else f"{out.stem}_figures")
        atomic_write(out, markdown.render(rep, figs, figs.name))
    return out
