"""Instance post-processing of JSNet's evaluation: mean-shift and room merging, native.

    from jsnet_tf.clustering import postprocess_room, mean_shift, RoomMerger

The functions live in `jsnet_tf.clustering.postprocess` and run on a compiled extension; the
first use of any of them raises `ExtensionError` (an ImportError) naming the build command
(`python -m jsnet_tf.clustering.build`) when the extension is missing or stale. The package
itself imports without it, so that the build command can run.
"""

import importlib

from jsnet_tf.clustering.library import BUILD_COMMAND, ExtensionError

_PUBLIC = (
    "ClusteringError",
    "RoomMerger",
    "cluster_classes",
    "finalize_instances",
    "mean_shift",
    "postprocess_room",
)

__all__ = ["BUILD_COMMAND", "ExtensionError", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module("jsnet_tf.clustering.postprocess"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
