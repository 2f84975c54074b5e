"""The errors of the input/output layer; every message names the file or folder and the problem."""


class InputError(ValueError):
    """Bad input or output location; the message names the file or folder and the problem."""


class OutputError(InputError):
    """An output cannot be written (disk full, permissions); the message names the file. Not skipped by
    ``--keep-going``: the next sequence would fail the same way."""
