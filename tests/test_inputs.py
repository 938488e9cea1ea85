"""Input a user gives: each bad input is one line naming what is wrong, exit code 2, nothing written."""
import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, TINY_SUITE, run_cli

# --- start-up: a suite that cannot be read or checked is answered before torch is imported ---------------------------

_NO_TORCH = textwrap.dedent("""
    import sys
    sys.argv = ["mmbench", *sys.argv[1:]]
    from mmbench.cli import main
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    print("EXIT", code, "TORCH", "torch" in sys.modules)
""")


@pytest.mark.parametrize("args", [
    ("validate", "{bad}"), ("run", "{bad}"), ("validate", "{schema}"), ("run", "{missing}"), ("validate", "{missing}"),
    ("run", "{schema}", "--quick"), ("--help",),
])
def test_bad_suite_is_answered_before_torch_loads(tmp_path, args):
    (tmp_path / "bad.yaml").write_text("name: x\nmethods: [\n")
    (tmp_path / "schema.yaml").write_text(TINY_SUITE.replace("train:", "trian:"))
    paths = {"bad": tmp_path / "bad.yaml", "schema": tmp_path / "schema.yaml", "missing": tmp_path / "missing.yaml"}
    argv = [a.format(**paths) for a in args]
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("EXIT 0" if args == ("--help",) else "EXIT 2"), (r.stdout, r.stderr)
    assert last.endswith("TORCH False"), "torch was imported before the suite was checked"
    if args != ("--help",):
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
