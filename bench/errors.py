"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class BenchError(Exception):
    """A problem the user can fix (bad config, bad input file, unknown name).

    The message must name the file or key and what is wrong with it; the CLI
    prints it as ``error: <message>`` with no traceback and exits with code 2.
    """


class NotImplementedYet(BenchError):
    """A command or feature that a later issue delivers.  Exits non-zero, says so."""

    def __init__(self, what: str, issue: int | None = None):
        where = f" (tracked in issue {issue})" if issue else ""
        super().__init__(f"{what} is not implemented yet{where}")
