"""What every command-line program of the package shares: starting an absl program the same way
whether it runs as a console script (`jsnet-train`), as `python -m jsnet_tf.train` or through a
wrapper at the repository root (`python train.py`); the flags several programs take, defined once
(`define_shared`); and one handler that turns a user error into one line.

Programs define their flags lazily (in a `define_flags()` called by `run_program`), so any of them
can be imported beside any other: `jsnet_tf.evaluate` and `jsnet_tf.predict` share a process.
"""

import sys

from absl import app, flags

# The flags that several programs take, with one meaning and one help text each:
# name -> (absl definer, default, help).
SHARED_FLAGS = {
    "workdir": (flags.DEFINE_string, None,
                "a run folder (config.toml and weights: train.py's <workdir>/area<k>, a ShapeNet or ScanNet run, or "
                "jsnet-convert's output), or train.py's workdir holding area<k>/ runs (--area picks one)"),
    "which": (flags.DEFINE_string, "latest",
              "weights to load: latest (the last epoch, as the paper), best (lowest validation loss; runs with validation "
              "data only: data.validation_rooms, ShapeNet's val split), or a checkpoint prefix or folder"),
    "set": (flags.DEFINE_multi_string, [],
            "override a config key: section.key=value (repeatable), e.g. eval.bandwidth=0.5 or train.batch_size=8"),
    "data_dir": (flags.DEFINE_string, None, "prepared data folder (overrides data.data_dir)"),
    "batch_size": (flags.DEFINE_integer, None, "blocks (shapes) per inference batch (overrides eval.batch_size)"),
    "seed": (flags.DEFINE_integer, None, "seed of the test protocol's block sampling and chunking (overrides eval.seed)"),
    "verbose": (flags.DEFINE_bool, True, "show progress bars"),
    "pictures": (flags.DEFINE_bool, True, "write coloured PLYs and PNG pictures"),
}

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def define_shared(*names):
    """Defines the named SHARED_FLAGS that are not defined yet (two programs in one process define
    them once), as key flags of the calling program, so that its `--helpshort` lists them."""
    caller = sys._getframe(1).f_globals["__name__"]
    caller = sys.argv[0] if caller == "__main__" else caller  # absl's name for the module run as a script
    for name in names:
        definer, default, text = SHARED_FLAGS[name]
        if name not in flags.FLAGS:
            definer(name, default, text)
        flags.FLAGS.register_key_flag_for_module(caller, flags.FLAGS[name])


def config_overrides(sets=(), values=None):
    """Config overrides from a program's flags: its `--set section.key=value` list, then one
    override per `{"section.key": value}` whose value was given (not None), written as TOML
    (strings quoted, booleans lower case, lists bracketed): the flags that stand for config keys
    (`--epochs` for train.epochs ...) win over --set."""
    from jsnet_tf.config import toml_value

    given = {key: value for key, value in (values or {}).items() if value is not None}
    return list(sets) + [f"{key}={toml_value(value)}" for key, value in given.items()]


def is_user_error(error):
    """Whether `error` is the user's to fix (a UserError, a file the system refused, TensorFlow's
    complaint about a corrupt checkpoint): reported in one line, never as a traceback."""
    from jsnet_tf.errors import UserError

    tensorflow = sys.modules.get("tensorflow")  # consulted only once TensorFlow is loaded
    op_errors = (tensorflow.errors.OpError,) if tensorflow else ()
    return isinstance(error, (UserError, OSError, MemoryError) + op_errors)


def guarded(main, name):
    """`main` whose user errors end the program with one line, `<name>: error: <message>`, status 1."""

    def run(argv):
        try:
            return main(argv)
        except Exception as error:
            if not is_user_error(error):
                raise
            sys.exit(f"{name}: error: {error}")

    return run


def run_program(main, module_name, define_flags=None, name=None):
    """Runs the absl `main` of module `module_name` as the program, after `define_flags()`.

    `--help` shows that module's docstring and flags however it was started (absl describes only
    the flags of `__main__`, which a console script's or a wrapper's `__main__` defines none of) and
    exits 0 (absl exits 1, which breaks `jsnet-train --help && ...`). With `name`, user errors are
    one line (`guarded`)."""
    if define_flags is not None:
        define_flags()
    module, started = sys.modules[module_name], sys.modules["__main__"]
    if started is not module:
        started.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    asked_for_help = any(arg in HELP_FLAGS for arg in sys.argv[1:])
    try:
        app.run(guarded(main, name) if name else main)
    except SystemExit as done:
        if asked_for_help and done.code == 1:
            sys.exit(0)
        raise
