"""The project's error classes: what the command line turns into one line and an exit code.

Every error the harness raises on purpose (bad data, a bad suite, an unknown name, bad input, a busy
or unwritable output folder, a run in which nothing could be scored) derives from ``NtdmbenchError``;
``ntdmbench``'s ``main`` catches only that class, so an unexpected internal error keeps its traceback.
The input and data errors are also ``ValueError`` (and the missing-file ones ``FileNotFoundError``) so
callers of the Python API can keep catching the built-in classes (a failed run is a ``RuntimeError``).
"""

from __future__ import annotations


class NtdmbenchError(Exception):
    """An error whose message is one line naming the file or value at fault."""

    exit_code: int = 2  # bad input; a run that produced nothing usable says 1


class InputError(NtdmbenchError, ValueError):
    """A command-line value, model argument or file the user gave that cannot be used."""


class MissingFileError(NtdmbenchError, FileNotFoundError):
    """A file or folder the user named that is not there."""

    def __str__(self) -> str:  # FileNotFoundError formats (errno, strerror); we want the sentence
        return str(self.args[0]) if self.args else ""


class OutputError(NtdmbenchError):
    """The output folder cannot be written (read-only, full, or in use by another process)."""


class RunFailedError(NtdmbenchError, RuntimeError):
    """A run that finished but has nothing to report (no samples, or every sample failed)."""

    exit_code = 1
