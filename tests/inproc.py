"""Run the CLI entry point in this process (exit code, stdout, stderr): the same path as `python -m mmbench`,
without a new interpreter for each call."""
from __future__ import annotations

import sys


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    import signal

    from mmbench.cli import main

    monkeypatch.setattr(sys, "argv", ["mmbench", *map(str, args)])
    capsys.readouterr()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # main() installs its own
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("mmbench: error:") and "Traceback" not in err
