"""The one exception type that the workflow shows to a user as a single line."""


class StageError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Raise it with a message that names the offending file, key or value and, where
    possible, the fix. Scripts print it without a traceback and exit non-zero; any
    other exception is a bug and keeps its traceback.
    """
