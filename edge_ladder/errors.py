"""User-facing errors: the CLI prints these as one clear message (no stack trace) and exits 2."""


class EdgeLadderError(Exception):
    """Bad input or configuration. The message says what was expected, what arrived, how to fix."""
