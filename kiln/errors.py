"""The one exception type users see: a clear message, exit code 2, no traceback."""


class KilnError(Exception):
    """A user-facing error (bad input file, unsupported operator, impossible setting).

    The CLI prints ``kiln: error: <message>`` and exits with code 2.
    """
