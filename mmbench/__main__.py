"""The program: `python -m mmbench` and the `mmbench` console script."""


def entry() -> None:
    import os
    import sys

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
        if exc.code in (130, 143):
            # A KeyboardInterrupt that passed through code built by exec (dataclasses, typing, pydantic build
            # functions that way) marks CPython's interpreter as interrupted for good, and it then dies by SIGINT
            # at exit whatever the code: the interruption was said, so leave now with its code.
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except Exception:  # noqa: BLE001 - nothing left to say it with
                    pass
            os._exit(exc.code)
        raise


if __name__ == "__main__":  # guarded: spawned worker processes import this module too
    entry()
