"""Experiment configs as data: TOML files, checked against the defaults below, with overrides
from the command line.

A config is given by path or by the name of one shipped in the package (`jsnet_tf/configs/`):
`s3dis_area5`, `demo`, `ablations/09_rs` (see `names()`); `configs/demo.toml`, the form of
earlier versions, names the shipped one too when no such file exists.

A config file sets any of the keys of DEFAULTS, grouped in tables (`[data]`, `[model]`,
`[train]`, `[eval]`), and may start from another file with `extends = "other.toml"` (resolved next to it).
An override is `section.key=value` with a TOML value (`train.batch_size=8`,
`data.areas=[1,2]`, `model.backbone="pointnet2"`; a bare word is taken as a string). Unknown
sections or keys and values of the wrong type are errors that name the file (or override) and
the key, with the closest known key as a hint.

Values are range-checked the same way, one line naming the source and the key: RANGES holds the
interval of every numeric key (of each value of a numeric list), e.g. train.batch_size ">= 1",
model.dropout "[0, 1)", always of finite numbers; LIST_RULES holds rules on a list as a whole
(model.npoints non-increasing, validation room names non-empty). Limits that join two keys
(eval.stride <= data.block_size, model.npoints[0] <= data.num_points) are checked where both
are used (evaluation, model building).
"""

import copy
import difflib
import math
import pathlib
import tomllib

from jsnet_tf import tasks
from jsnet_tf.errors import UserError

DEFAULTS = {
    "data": {
        "dataset": "s3dis",  # a registered dataset (jsnet_tf.tasks): s3dis | shapenet | scannet
        "data_dir": "data/s3dis",  # prepared data (prepare_s3dis --out)
        "areas": [5],  # test areas: one fold per area (6-fold: [1, 2, 3, 4, 5, 6])
        "num_points": 4096,
        "block_size": 1.0,
        # Training blocks (S3DIS): "resample" (the original's documented command, the paper's RS):
        # every stride-0.5 block of every training room once per epoch, 4096 points drawn afresh;
        # "fixed": the prepared h5 blocks, the same points every epoch (the paper's fixed sample);
        # "random_corners": random block corners, ceil(x) * ceil(y) per room and epoch.
        "sampling": "resample",
        "blocks_per_room": 0,  # random_corners only: blocks per room and epoch; 0: ceil(max x) * ceil(max y) of the room
        # Rooms (ScanNet: scenes) of the training data held out for validation, "best" and early
        # stopping: a fraction in [0, 1) (seeded by train.seed) or a list of names ("Area_1_office_3",
        # "scene0000_00"); 0.0 / []: none, then validation, "best" and early stopping are off (the
        # original's way).
        "validation_rooms": 0.0,
    },
    "model": {
        "num_classes": 13,
        "input_channels": 9,
        "embedding_dim": 5,
        "npoints": [1024, 256, 64, 32],  # sampled centres of the four encoder levels
        "radii": [0.1, 0.2, 0.4, 0.8],  # neighbourhood radii of the four encoder levels (S3DIS: metres)
        "sigma": 0.05,
        "dropout": 0.5,
        "backbone": "pointconv",  # pointconv | pointnet2 (the base network of Table 4)
        "pcff": True,
        "instance_fusion": True,
        "semantic_fusion": True,
    },
    "train": {
        "batch_size": 24,
        "epochs": 100,
        "learning_rate": 1e-3,
        "decay_rate": 0.5,
        "min_learning_rate": 1e-5,
        "reference_decay_steps": 12500,  # at batch 24; scaled to the batch size (schedules.decay_steps_for)
        "bn_init_decay": 0.5,
        "bn_decay_rate": 0.5,
        "bn_decay_clip": 0.99,
        "disc_weight": 1.0,
        "seed": 0,
        "keep_checkpoints": 3,
        "early_stopping_patience": 0,  # epochs without a better validation loss; 0: off
        # Validation, "best" and early stopping on the TEST area: leaks the reported data into
        # model selection. Refused unless set to true in as many words; recorded in the run.
        "select_on_test_area": False,
    },
    "eval": {
        "stride": 0.5,  # sliding-window step of the test blocks (block size: data.block_size)
        "min_block_points": 100,  # test blocks with fewer points are skipped
        "label_all_points": True,  # False: the original's one random num_points sample per block
        "batch_size": 8,  # blocks per inference batch
        "bandwidth": 0.6,  # mean-shift bandwidth on the embeddings
        "gap": 5e-3,  # BlockMerging cell size in normalised room coordinates
        "min_overlap": 7,  # same-class cells for a block cluster to join a room instance
        "min_new_points": 30,  # points for a non-overlapping cluster to start a new instance
        "size_fraction": 0.25,  # instances at most this fraction of their class's mean size are dropped
        "seed": 0,  # block sampling and chunking
    },
}


# Keys whose value is one of a fixed set of words.
CHOICES = {
    ("data", "dataset"): tasks.names(),  # the registered datasets (jsnet_tf.tasks)
    ("data", "sampling"): ("resample", "fixed", "random_corners"),
    ("model", "backbone"): ("pointconv", "pointnet2"),
}
# List keys of a fixed length (one value per encoder level).
LENGTHS = {("model", "npoints"): 4, ("model", "radii"): 4}
# Keys that take either of two types: a fraction or a list of room names.
ALTERNATIVE_TYPES = {("data", "validation_rooms"): ([""],)}
# The interval of finite numbers each numeric key (each value of a list) lies in: ">= a", "> a",
# or "[a, b)" with a square bracket where the end belongs to it.
RANGES = {
    ("data", "areas"): ">= 1",  # Area_1, Area_2, ...
    ("data", "num_points"): ">= 1",
    ("data", "block_size"): "> 0",
    ("data", "blocks_per_room"): ">= 0",  # 0: the room's ceil(max x) * ceil(max y)
    ("data", "validation_rooms"): "[0, 1)",  # the fraction form
    ("model", "num_classes"): ">= 1",
    ("model", "input_channels"): ">= 3",  # xyz, then the features
    ("model", "embedding_dim"): ">= 1",
    ("model", "npoints"): ">= 1",
    ("model", "radii"): "> 0",
    ("model", "sigma"): "> 0",  # a kernel-density variance
    ("model", "dropout"): "[0, 1)",  # a rate of 1 would drop everything
    ("train", "batch_size"): ">= 1",
    ("train", "epochs"): ">= 1",  # 0 would train nothing yet write a run
    ("train", "learning_rate"): "> 0",
    ("train", "decay_rate"): "(0, 1]",  # 1: no decay
    ("train", "min_learning_rate"): ">= 0",
    ("train", "reference_decay_steps"): ">= 1",
    ("train", "bn_init_decay"): "[0, 1]",  # BN momentum min(clip, 1 - init * rate ** stage) stays in [0, 1]
    ("train", "bn_decay_rate"): "[0, 1]",
    ("train", "bn_decay_clip"): "[0, 1]",
    ("train", "disc_weight"): ">= 0",
    ("train", "seed"): "[0, 4294967295]",  # NumPy's seed range (keras.utils.set_random_seed)
    ("train", "keep_checkpoints"): ">= 1",  # resumption needs the last one
    ("train", "early_stopping_patience"): ">= 0",  # 0: off
    ("eval", "stride"): "> 0",
    ("eval", "min_block_points"): ">= 1",
    ("eval", "batch_size"): ">= 1",
    ("eval", "bandwidth"): "> 0",
    ("eval", "gap"): "(0, 1)",  # a cell of the room normalised to [0, 1]
    ("eval", "min_overlap"): ">= 0",
    ("eval", "min_new_points"): ">= 0",
    ("eval", "size_fraction"): ">= 0",
    ("eval", "seed"): ">= 0",
}
# Rules on a list value as a whole: (test, what it asks for).
LIST_RULES = {
    ("model", "npoints"): (
        lambda counts: all(a >= b for a, b in zip(counts, counts[1:])),
        "non-increasing (each encoder level samples its centres among the previous level's)",
    ),
    ("data", "validation_rooms"): (lambda names: all(names), "non-empty room names"),
}


CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the schema."""


def names():
    """The shipped configs' names ("s3dis_area5", "ablations/09_rs", ...), sorted."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.toml"))


def find(path_or_name):
    """The config file of a path, else of a shipped config's name (with or without `.toml` and a
    leading `configs/`). Raises ConfigError naming the shipped configs when neither exists."""
    given = pathlib.Path(path_or_name).expanduser()
    if given.is_file():
        return given.resolve()
    name = given.as_posix().removesuffix(".toml")
    for candidate in (name, name.removeprefix("configs/")):
        shipped = CONFIG_DIR / f"{candidate}.toml"
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{path_or_name}: no such config file, nor a shipped config (one of: {', '.join(names())})")


def _hint(name, known):
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


def _type_ok(value, default):
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and all(_type_ok(v, default[0]) for v in value) if default else isinstance(value, list)
    return isinstance(value, type(default))


def interval(text):
    """(low, low included, high, high included) of an interval written as in RANGES."""
    if text.startswith(">"):
        return float(text.lstrip(">= ")), text.startswith(">="), math.inf, False
    low, high = text[1:-1].split(",")
    return float(low), text[0] == "[", float(high), text[-1] == "]"


def _inside(value, text):
    low, low_included, high, high_included = interval(text)
    above = low <= value if low_included else low < value
    below = value <= high if high_included else value < high
    return math.isfinite(value) and above and below


def _check_range(section, key, value, source):
    """Raises ConfigError when a value (of the right type) lies outside RANGES or breaks LIST_RULES."""
    name, where = f"{section}.{key}", RANGES.get((section, key))
    numbers = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, (int, float))]
    outside = [v for v in numbers if where and not _inside(v, where)]
    if outside:
        finite = "" if all(math.isfinite(v) for v in outside) else "a finite number "
        wanted = where if where.startswith(">") else f"in {where}"
        each = " each" if isinstance(value, list) else ""
        raise ConfigError(f"{source}: {name} must be {finite}{wanted}{each}, got {value!r}")
    rule = LIST_RULES.get((section, key))
    if rule and isinstance(value, list) and not rule[0](value):
        raise ConfigError(f"{source}: {name} must be {rule[1]}, got {value!r}")


def _set(config, section, key, value, source):
    if section not in DEFAULTS:
        raise ConfigError(f"{source}: unknown section [{section}]{_hint(section, DEFAULTS)}")
    if key not in DEFAULTS[section]:
        raise ConfigError(f"{source}: unknown key {section}.{key}{_hint(key, DEFAULTS[section])}")
    default = DEFAULTS[section][key]
    alternatives = ALTERNATIVE_TYPES.get((section, key), ())
    of_default_type = _type_ok(value, default)
    if not of_default_type and not any(_type_ok(value, a) for a in alternatives):
        raise ConfigError(
            f"{source}: {section}.{key} must be {type(default).__name__} like {default!r}, got {value!r}"
        )
    length = LENGTHS.get((section, key))
    if length and len(value) != length:
        raise ConfigError(f"{source}: {section}.{key} needs {length} values (one per encoder level), got {value!r}")
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{source}: {section}.{key} must be one of {', '.join(choices)}, got {value!r}{_hint(value, choices)}")
    _check_range(section, key, value, source)
    config[section][key] = float(value) if isinstance(default, float) and of_default_type else value


def _read(path, seen):
    path = pathlib.Path(path).resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back to this file")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    parent = data.pop("extends", None)
    config = _read(path.parent / parent, seen | {path}) if parent else copy.deepcopy(DEFAULTS)
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]{_hint(section, DEFAULTS)}")
        for key, value in table.items():
            _set(config, section, key, value, str(path))
    return config


def parse_override(text):
    """'section.key=value' -> (section, key, value); the value is read as TOML, else as a string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.batch_size=8")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def load(path=None, overrides=()):
    """The config of `path` (a file or a shipped config's name; None: the defaults) with the
    overrides applied, as nested dicts."""
    config = _read(find(path), frozenset()) if path else copy.deepcopy(DEFAULTS)
    return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
    """Applies 'section.key=value' overrides to a loaded config (in place; also returned)."""
    for text in overrides:
        section, key, value = parse_override(text)
        _set(config, section, key, value, f"override {text!r}")
    return config


def differences(previous, current):
    """'section.key: a -> b' for every key whose value differs between two nested dicts, joined
    by '; ' (what a refusal to mix two runs names)."""

    def walk(a, b, prefix):
        for key in sorted(set(a) | set(b), key=str):
            x, y = a.get(key, "(absent)"), b.get(key, "(absent)")
            if isinstance(x, dict) and isinstance(y, dict):
                yield from walk(x, y, f"{prefix}{key}.")
            elif x != y:
                yield f"{prefix}{key}: {x!r} -> {y!r}"

    return "; ".join(walk(previous, current, ""))


def toml_string(text):
    """A TOML string literal of `text`."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_value(v):
    """A config value (bool, number, string or list of them) as TOML text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(config):
    """The config as TOML text (written next to checkpoints, so a run records what it used)."""
    lines = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(v)}" for key, v in table.items())
        lines.append("")
    return "\n".join(lines)
