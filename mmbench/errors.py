"""User-facing errors: one line, turned into exit code 2 at the CLI boundary."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (suite file, arguments, paths). Never a bug in mmbench.

    Rendered as one line: ``<file>:<line>: <key.path>: <message>`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None):
        self.message, self.file, self.key, self.line = message, file, key, line
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"

    def at(self, *, file: str | None = None, key: str | None = None,
           line: int | None = None) -> "UserError":
        """The same error with location filled in where it was missing.

        An error that already names another file (a data file, a manifest) keeps that file inside its message, and
        the new location (the suite's line) goes in front: ``suite.yaml:3: task: data/x.csv: view 'a': …``, so a
        suite's line number is never read as a line of the data file."""
        if self.file and file and file != self.file:
            return UserError(self.render(), file=file, key=key, line=line)
        return UserError(self.message, file=self.file or file, key=self.key or key,
                         line=self.line or line)


def closest(name: str, choices) -> str:
    """' (did you mean X?)' when a close registered name exists, else ''."""
    import difflib

    hits = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{hits[0]}'?)" if hits else ""
