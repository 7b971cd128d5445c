"""The one exception type that reaches the user as a one-line message."""


class GlmkitError(Exception):
    """A problem with the user's input or environment, not a bug.

    The CLI prints ``glmkit <command>: error: <message>`` and exits 1, without a
    traceback unless ``--debug``. Messages name the file, the record and the
    problem.
    """


class GlmkitUsageError(GlmkitError):
    """An invalid combination of options found after parsing: exit status 2, like click's usage errors."""
