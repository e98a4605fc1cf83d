"""User-facing errors: one line, exit code 2, no traceback (unless ``--debug``)."""

from __future__ import annotations


class SeqclError(Exception):
    """A mistake in the user's input (file, config key, component name).

    The CLI prints ``error: <message>`` and exits with code 2. Messages name the
    file and line, or the key, and the offending value.
    """

    exit_code = 2


class DataError(SeqclError):
    """A data file that cannot be read: missing, empty or malformed."""


class ConfigError(SeqclError):
    """An unknown key, a value of the wrong type or out of range."""


class PluginError(SeqclError):
    """An unknown component name, a duplicate registration, a broken plugin."""


class StorageError(SeqclError):
    """A file that could not be written (read-only folder, full disk): not the user's input."""

    exit_code = 1


class NonFiniteLoss(SeqclError):
    """Training diverged: a loss term became NaN or infinite (the last good checkpoint is kept)."""

    exit_code = 3
