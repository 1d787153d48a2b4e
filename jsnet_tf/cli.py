"""What every command-line program of the package shares: starting an absl program the same way
whether it runs as a console script (`jsnet-train`), as `python -m jsnet_tf.train` or through a
wrapper at the repository root (`python train.py`)."""

import sys

from absl import app, flags


def config_overrides(sets=(), values=None):
    """Config overrides from a program's flags: its `--set section.key=value` list, then one
    override per `{"section.key": value}` whose value was given (not None), written as TOML
    (strings quoted, booleans lower case, lists bracketed): the flags that stand for config keys
    (`--epochs` for train.epochs ...) win over --set."""
    from jsnet_tf.config import toml_value

    given = {key: value for key, value in (values or {}).items() if value is not None}
    return list(sets) + [f"{key}={toml_value(value)}" for key, value in given.items()]


def run_program(main, module_name, define_flags=None):
    """Runs the absl `main` of module `module_name` as the program; `--help` shows that module's
    docstring and flags however it was started (absl describes only the flags of `__main__`,
    which a console script's or a wrapper's `__main__` defines none of)."""
    if define_flags is not None:
        define_flags()
    module, started = sys.modules[module_name], sys.modules["__main__"]
    if started is not module:
        started.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
