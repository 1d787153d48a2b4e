"""A choice among a few named options that code reads when it runs (or is traced): the innermost
``use(...)`` block, else ``set(...)`` for the process, else an environment variable (how a user
switches any program), else a default. The op implementation and the layers' arithmetic are two.
"""

import contextlib
import contextvars
import os
from collections.abc import Callable


class ScopedChoice:
    """One choice: `what` names it in errors, `choices` are its options, `environment_variable`
    the user's switch (read stripped and lower-cased), `default()` the option when nothing chose,
    `error` the exception class of an unknown name (a UserError: one line, no traceback)."""

    def __init__(self, what, choices, environment_variable, default: Callable[[], str], error):
        self.what, self.choices, self.environment_variable = what, tuple(choices), environment_variable
        self._default, self._error = default, error
        self._scoped = contextvars.ContextVar(f"jsnet_{environment_variable.lower()}", default=None)
        self._process = None

    def check(self, name, source):
        """`name` if it is an option, else the one-line error naming `source` (where it came from)."""
        if name not in self.choices:
            raise self._error(f"{source}: unknown {self.what} {name!r}; choose one of {', '.join(self.choices)}")
        return name

    def current(self):
        """The option in force here and now."""
        chosen = self._scoped.get() or self._process
        if chosen is None:
            given = os.environ.get(self.environment_variable, "").strip().lower()
            chosen = self.check(given, self.environment_variable) if given else self._default()
        return chosen

    def set(self, name, source):
        """Chooses `name` process-wide; None goes back to the environment variable or the default."""
        self._process = None if name is None else self.check(name, source)

    @contextlib.contextmanager
    def use(self, name, source):
        """Chooses `name` inside the block (blocks nest)."""
        token = self._scoped.set(self.check(name, source))
        try:
            yield
        finally:
            self._scoped.reset(token)
