if __name__ == "__main__":  # guarded: spawned worker processes import this module too
    import sys

    from mmbench import interrupt

    interrupt.on_sigterm()  # before the command line loads: a SIGTERM at any instant says where it stopped
    try:
        from mmbench.cli import main
    except KeyboardInterrupt:
        print("mmbench: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(143 if interrupt.terminated else 130)
    main()
