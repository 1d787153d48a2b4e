"""The base of the package's user errors, and the data error shared by the data modules.

Imports nothing: the programs catch `UserError` before (or without) loading TensorFlow, NumPy or
the native libraries.
"""


class UserError(Exception):
    """Bad input or set-up: the programs print it as one line, no traceback.

    Each module's error subclasses it together with the built-in type it has always been (e.g.
    `class ConfigError(UserError, ValueError)`), so `except ValueError` still catches it.
    """


class DataError(UserError, ValueError):
    """Malformed or unreadable input data; the message names the file (and line, if known)."""
