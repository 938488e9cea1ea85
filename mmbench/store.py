"""The run directory: every file written atomically or appended durably, so a kill never leaves a torn result; and
the one reader of it (``load_run``: a Run) that report, history and compare use. Standard library only: no torch.

results/<suite>/<run-id>/
  run.json         schema version, suite, state (running | complete | interrupted), times, pid, resumes
  suite.yaml       the suite file as given;  resolved.json: the validated suite and every trial's full config
  env.json         the environment;          tasks.json: what each dataset states (Bayes accuracy, dims, sizes)
  results.jsonl    one row per finished trial, appended and fsynced (the durable record)
  samples.jsonl    raw samples per trial (every latency sample, every seed's scores), appended before its row
  results.csv      the rows as a table (rewritten atomically after each trial)
  report.md        comparison tables
  .lock            held (flock) by the one process running or resuming the run; the kernel drops it when that dies
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from mmbench.errors import UserError

SCHEMA_VERSION = 1
FIRST_COLUMNS = ["trial_id", "task", "method", "label", "dims", "rank", "hparams", "device", "status", "error"]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str | bytes) -> None:
    """The one way a whole file is written: a kill leaves the old file or the new one; a full disk or a read-only
    folder is a UserError naming the file, and the old file stays. The temporary name beside the target is unique
    (pid and random), so writers at once (eight `mmbench report` of one run) never take each other's: the last
    rename wins, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(f"cannot write: {exc.strerror or exc}", file=str(path)) from None


def _writer_gone(tmp: Path) -> bool:
    """A temporary file whose writer is dead (a kill cut its atomic write): .NAME.PID-RANDOM.tmp."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2].split("-")[0])
    except (ValueError, IndexError):
        return True  # an older mmbench's .NAME.tmp
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


MIN_FREE_BYTES = 16 << 20  # a run directory's files (rows, samples, reports) take a few MiB


def inside(out: str | Path, *parts: str) -> Path:
    """OUT/parts…, refused unless it lies inside OUT once resolved (names are checked too; this is the last word)."""
    root = Path(out).resolve()
    path = root.joinpath(*parts).resolve()
    if path == root or root not in path.parents:
        raise UserError(f"'{'/'.join(parts)}' would put the run outside the results folder", file=str(out))
    return path


def check_out(out: str | Path) -> None:
    """Before any trial runs: OUT is (or can become) a writable folder with room for a run. UserError otherwise;
    nothing is created here, so a suite refused later leaves no folder behind."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError("--out is a file, not a folder", file=str(p))
    base = p.resolve()
    while not base.exists():  # the nearest folder that exists: the one the run's folders will be created in
        base = base.parent
    if not base.is_dir():
        raise UserError(f"cannot create the results folder: {base} is a file", file=str(p))
    try:
        _probe(base)
    except OSError as exc:
        raise UserError(f"cannot write in {base}: {exc.strerror}", file=str(p)) from None
    free = free_bytes(base)
    if free < MIN_FREE_BYTES:
        raise UserError(f"no room for a run: {free // 1024} KiB free on the file system of {base} "
                        f"(at least {MIN_FREE_BYTES >> 20} MiB needed)", file=str(p))


def _probe(folder: Path) -> None:
    """Create (and drop) a nameless file: permissions, a read-only mount and quotas all answer here."""
    import tempfile

    with tempfile.TemporaryFile(dir=folder) as f:
        f.write(b"x")
        f.flush()


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


LOCK_NAME = ".lock"
_owned: dict[Path, int] = {}  # run directory → the descriptor whose flock makes this process its owner


def own(path: str | Path) -> None:
    """Make this process the one writer of a run directory until ``disown`` or its death: an flock on RUN_DIR/.lock,
    which the kernel drops when the process dies (a kill -9 leaves no stale lock), and which workers never hold
    (close-on-exec for spawned ones; a forked child closes its copy, ``drop_inherited``). A directory another live process owns is a UserError naming its pid; taking it twice in one
    process is a no-op."""
    import fcntl

    key = Path(path).resolve()
    if key in _owned:
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"cannot lock the run directory: {exc.strerror}", file=str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise UserError(f"this run directory is in use by another mmbench process (pid {pid}) that is running or "
                        f"resuming it: wait for it to end, or stop it (kill {pid}) and then resume",
                        file=str(path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _owned[key] = fd


def owns(path: str | Path) -> bool:
    """Whether this process owns the run directory (``own``)."""
    return Path(path).resolve() in _owned


def disown(path: str | Path) -> None:
    fd = _owned.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def drop_inherited() -> None:
    """In a forked child: close its copies of the descriptors whose flock makes the parent the owner. The lock stays
    the parent's (an flock goes only when every copy is closed), and a child that outlived the parent, or died after
    it, would otherwise hold it against the run's --resume."""
    for fd in _owned.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _owned.clear()


class DamagedLine(UserError):
    """A complete line of a jsonl file that is not a record (not JSON, not an object, no trial id): a disk error, an
    edit. Not a torn last line, which is a kill mid-write."""

    def __init__(self, path: Path, line: int, why: str):
        self.path, self.lineno, self.why = path, line, why
        super().__init__(f"{path.name} line {line} is {why}", file=str(path.parent))


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._rows: list[dict[str, Any]] | None = None
        self._csv_written = 0.0
        self.order: list[str] = []  # trial ids in plan order, set by the runner
        self.drop_damaged = False   # resuming: a damaged line ends what is read (it and what follows run again)

    # --- writing ---------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | Path, suite_name: str) -> "RunDir":
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = inside(out, suite_name, f"{stamp}-{secrets.token_hex(2)}")
        check_out(out)
        try:
            path.mkdir(parents=True, exist_ok=False)
            own(path)
            run = cls(path)
            run.write_json("run.json", {"schema": SCHEMA_VERSION, "suite": suite_name, "state": "running",
                                        "started": _now(), "finished": None, "pid": os.getpid()})
        except OSError as exc:
            raise UserError(f"cannot create the run directory: {exc.strerror}", file=str(path)) from None
        return run

    @classmethod
    def reopen(cls, path: str | Path, suite_name: str, drop_damaged: bool = False) -> "RunDir":
        """A run directory to resume, checked before anything in it is touched (UserError otherwise). A damaged
        line in its results is DamagedLine, unless ``drop_damaged``: then it ends what is kept."""
        run = cls(path)
        run.drop_damaged = drop_damaged
        if not run.path.is_dir():
            raise UserError("cannot resume: no such directory", file=str(run.path))
        if not (run.path / "run.json").exists():
            raise UserError("cannot resume: not a run directory (no run.json)", file=str(run.path))
        meta = run.meta()
        if not isinstance(meta, dict) or "suite" not in meta:
            raise UserError("cannot resume: not a run directory (run.json has no 'suite')", file=str(run.path))
        schema = meta.get("schema")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise UserError(f"cannot resume: written by a newer mmbench (run schema {schema}, this version reads "
                            f"up to {SCHEMA_VERSION})", file=str(run.path))
        if meta["suite"] != suite_name:
            raise UserError(f"cannot resume: this is a run of suite '{meta['suite']}', not '{suite_name}'",
                            file=str(run.path))
        run.rows(), run.samples()  # a damaged line fails now, before a trial runs
        return run

    def keep_only(self, trial_ids: set[str]) -> None:
        """Before resuming: rows of these trials only, the last of each, and their samples; no torn tail, so that
        appends start on a fresh line. Both files are rewritten atomically."""
        rows = {r["trial_id"]: r for r in self._jsonl("results.jsonl") if r.get("trial_id") in trial_ids}
        samples = {s["trial_id"]: s for s in self._jsonl("samples.jsonl") if s.get("trial_id") in rows}
        rows = {tid: r for tid, r in rows.items() if tid in samples}  # its samples lost to damage: it runs again
        self.write_text("samples.jsonl", "".join(json.dumps(s, default=str) + "\n" for s in samples.values()))
        self.write_text("results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows.values()))
        for tmp in self.path.glob(".*.tmp"):  # an atomic write cut by a kill (not a live report writer's)
            if _writer_gone(tmp):
                tmp.unlink(missing_ok=True)
        self._rows = list(rows.values())

    def resumed(self) -> None:
        meta = self.meta()
        meta.update(state="running", finished=None, pid=os.getpid(), resumed=[*meta.get("resumed", []), _now()])
        self.write_json("run.json", meta)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, _json(obj))

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, text)

    def set_state(self, state: str, in_place_if_full: bool = False) -> None:
        """``in_place_if_full``: a stop on a full disk, where no new file can be made: run.json is rewritten in
        place (the new text fits the blocks the file already has), not atomically, so that it says where the run
        stopped."""
        meta = self.meta()
        meta.update(state=state, finished=_now() if state != "running" else None)
        try:
            self.write_json("run.json", meta)
        except UserError:
            if not in_place_if_full:
                raise
            try:
                with open(self.path / "run.json", "r+") as f:
                    f.write(_json(meta))
                    f.truncate()
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise UserError(f"cannot write: {exc.strerror or exc}", file=str(self.path / "run.json")) from None

    def append(self, row: dict[str, Any], raw: dict[str, Any]) -> None:
        """Raw samples first, then the row: a row in results.jsonl means its trial is fully recorded."""
        rows = self.rows()  # loaded before the append, so the new row is not read back twice
        self._append_line("samples.jsonl", {"trial_id": row["trial_id"], **raw})
        self._append_line("results.jsonl", row)
        rows.append(row)
        # The CSV is a view of results.jsonl: refresh it at most once a second (thousands of cheap trials), and always
        # in finish().
        if time.monotonic() - self._csv_written > 1.0:
            self.write_csv()

    def write_csv(self) -> None:
        """Rows in plan order when it is known (workers and resumes append them in the order trials finish)."""
        rows = self.rows()
        if self.order:
            pos = {tid: i for i, tid in enumerate(self.order)}
            rows = sorted(rows, key=lambda r: pos.get(r["trial_id"], len(pos)))
        self.write_text("results.csv", rows_to_csv(rows))
        self._csv_written = time.monotonic()

    def _append_line(self, name: str, obj: dict) -> None:
        try:
            with open(self.path / name, "a") as f:
                f.write(json.dumps(obj, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # disk full, quota, unplugged: what was fsynced before stays, a torn tail is dropped
            raise UserError(f"cannot write {name}: {exc.strerror}: every trial recorded before this one is kept; "
                            f"once it can be written, finish the run with --resume {self.path}",
                            file=str(self.path)) from None

    def _jsonl(self, name: str) -> list[dict[str, Any]]:
        """The records of one of the run's files, as resuming reads them: a torn tail is not a record (the next
        append starts a fresh line); a damaged line says how to resume past it."""
        try:
            return read_jsonl(self.path / name, stop_at_damage=self.drop_damaged)[0]
        except DamagedLine as exc:
            raise UserError(f"line {exc.lineno} is damaged ({exc.why}): resume with --drop-damaged to keep the "
                            f"{exc.lineno - 1} line(s) before it (the trials after it run again), or start a new run",
                            file=str(exc.path)) from None

    # --- reading ---------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "run.json").read_text())
        except FileNotFoundError:
            raise UserError("not a run directory (no run.json)", file=str(self.path)) from None
        except json.JSONDecodeError:
            raise UserError("run.json is not valid JSON", file=str(self.path)) from None

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = self._jsonl("results.jsonl")
        return self._rows

    def samples(self) -> dict[str, dict[str, Any]]:
        return {s["trial_id"]: s for s in self._jsonl("samples.jsonl")}

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())


def read_jsonl(path: Path, *, stop_at_damage: bool = False) -> tuple[list[dict[str, Any]], str]:
    """(records, torn tail): the one reader of a run's jsonl files. Complete lines only: what follows the last
    newline is a line cut by a kill, never a record; it is returned ('' when there is none) for the caller to judge.
    A complete line that is not a record is DamagedLine, or with ``stop_at_damage`` the end of what is read."""
    if not path.exists():
        return [], ""
    *lines, tail = path.read_bytes().split(b"\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            why = "not valid JSON"
        else:
            if isinstance(obj, dict) and "trial_id" in obj:
                out.append(obj)
                continue
            why = "a JSON object without 'trial_id'" if isinstance(obj, dict) else "not a JSON object"
        if stop_at_damage:
            break
        raise DamagedLine(path, i, why)
    return out, tail.decode(errors="replace") if tail.strip() else ""


# --- reading a run directory (reports, history, compare) -------------------------------------------------------------
@dataclass
class Run:
    """One run directory, read once."""
    path: Path
    meta: dict[str, Any]
    env: dict[str, Any]
    tasks: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    samples: dict[str, dict[str, Any]]
    label: str = ""                       # how this run is named beside others in a merged report
    truncated: bool = False               # results.jsonl ended in a torn line (a kill mid-write)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suite(self) -> str:
        return self.meta.get("suite", "?")

    @property
    def complete(self) -> bool:
        return self.meta.get("state") == "complete" and not self.truncated

    @cached_property
    def resolved(self) -> dict[str, Any]:
        """resolved.json (the validated suite, ``quick``, every trial's full config); {} for a run without one.
        Read when asked: it holds every trial's config, and a report never needs it."""
        value = _json_file(self.path / "resolved.json", {})
        return value if isinstance(value, dict) else {}

    def frame(self):
        """The rows as a pandas DataFrame: typed columns, each metric's unit in ``.attrs["units"]`` (frames.py)."""
        from mmbench.frames import rows_frame

        return rows_frame(self.rows)


def _json_file(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError:  # not JSON, or not UTF-8
        raise UserError(f"{path.name} is not valid JSON", file=str(path.parent)) from None


def load_run(path: str | Path, *, strict: bool = False) -> Run:
    """A run directory as a Run. Raises UserError for a path that is not one, a damaged line, or (when ``strict``:
    compare judges a run whole) a torn results file or a complete run without one."""
    p = Path(path)
    if not p.is_dir():
        raise UserError("not a run directory (no such directory)", file=str(p))
    meta = RunDir(p).meta()
    if not isinstance(meta, dict) or "suite" not in meta:
        raise UserError("not a run directory (run.json has no 'suite')", file=str(p))
    if strict and not (p / "results.jsonl").exists() and meta.get("state") == "complete":
        raise UserError("results.jsonl is missing from a complete run", file=str(p))
    rows, tail = read_jsonl(p / "results.jsonl")
    if tail and strict:
        raise UserError(f"results.jsonl is truncated (last line cut off: {tail[:40]!r}…)", file=str(p))
    samples, _ = read_jsonl(p / "samples.jsonl")  # samples precede their row: a torn one has no row
    return Run(path=p, meta=meta, env=_json_file(p / "env.json", {}), tasks=_json_file(p / "tasks.json", []),
               rows=rows, samples={s["trial_id"]: s for s in samples}, truncated=bool(tail))


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Several runs, each labelled so that a merged report tells them apart."""
    runs = [load_run(p) for p in paths]
    for run, label in zip(runs, run_labels(runs)):
        run.label = label
    return runs


def run_labels(runs: list[Run]) -> list[str]:
    """Short names that tell runs apart: the device if that differs, else the git sha, else the directory name."""
    if len(runs) == 1:
        return [runs[0].path.name]
    candidates = [
        lambda r: r.env.get("device") or "?",
        lambda r: (r.env.get("mmbench_git_sha") or "unknown")[:7],
        lambda r: f"{r.env.get('device') or '?'}@{(r.env.get('mmbench_git_sha') or 'unknown')[:7]}",
        lambda r: r.path.name,
    ]
    for make in candidates:
        labels = [make(r) for r in runs]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i + 1}:{r.path.name}" for i, r in enumerate(runs)]


def columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    cols = list(FIRST_COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return buf.getvalue()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
