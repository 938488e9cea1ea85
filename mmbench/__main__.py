"""The program: `python -m mmbench` and the `mmbench` console script."""
import os
import sys


def entry() -> None:
    from mmbench import interrupt

    interrupt.on_sigterm()  # before the command line loads: a SIGTERM at any instant says where it stopped
    try:
        from mmbench.cli import main
    except KeyboardInterrupt:
        print("mmbench: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(143 if interrupt.terminated else 130)
    try:
        main()
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code) -> None:
    """End the process with ``code`` once everything is said, without the interpreter's teardown: with torch loaded
    it takes ~1.3 s (measured after `mmbench run suites/tfn_vs_lmf.yaml --quick`), a tenth of that run. Every
    result is written and closed by then; the atexit handlers still run (multiprocessing's, logging's, weakref
    finalizers, Ray's shutdown), and the streams are flushed."""
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"), as Python itself handles it
        print(code, file=sys.stderr)
        code = 1
    if code not in (130, 143):
        # An interrupted command skips them: a KeyboardInterrupt that passed through code built by exec
        # (dataclasses, typing, pydantic build functions that way) marks CPython's interpreter as interrupted for
        # good, and its handlers would die by SIGINT. The interruption was said; it leaves with its code.
        import atexit

        atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001 - nothing left to say it with
            pass
    os._exit(code)


if __name__ == "__main__":  # guarded: spawned worker processes import this module too
    entry()
