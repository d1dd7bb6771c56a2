"""The one exception type that the workflow shows to a user as a single line."""


class StageError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Raise it with a message that names the offending file, key or value and, where
    possible, the fix. Scripts print it without a traceback and exit non-zero; any
    other exception is a bug and keeps its traceback.
    """


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type's name), for one-line errors."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
