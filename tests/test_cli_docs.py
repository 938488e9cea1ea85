"""Every command the CLI offers is documented in the README."""
import re

import typer.main

from mmbench.cli import app
from tests.conftest import ROOT


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = typer.main.get_command(app).commands
    assert {"run", "validate", "list", "report", "history", "compare"} <= set(commands)
    for name, cmd in commands.items():
        assert re.search(rf"`mmbench {name}\b", readme), f"`mmbench {name}` is not in README.md"
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in readme, f"`mmbench {name} {opt}` is not in README.md"
