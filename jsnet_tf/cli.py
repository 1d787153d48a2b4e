"""What every command-line program of the package shares: starting an absl program the same way
whether it runs as a console script (`jsnet-train`), as `python -m jsnet_tf.train` or through a
wrapper at the repository root (`python train.py`)."""

import sys

from absl import app, flags


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
