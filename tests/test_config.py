import math
import pathlib

import pytest

from jsnet_tf import config

CONFIGS = sorted(config.CONFIG_DIR.rglob("*.toml"))


def test_defaults_are_the_papers_s3dis_setting():
    c = config.load()
    assert (c["train"]["batch_size"], c["train"]["epochs"], c["data"]["num_points"]) == (24, 100, 4096)
    assert (c["model"]["num_classes"], c["model"]["embedding_dim"], c["model"]["dropout"]) == (13, 5, 0.5)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    c = config.load(path)
    written = tmp_path / "c.toml"
    written.write_text(config.to_toml(c))
    assert config.load(written) == c


def test_shipped_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"s3dis_area5", "s3dis_6fold", "shapenet_part", "demo"}


def test_extends_and_overrides(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('[train]\nbatch_size = 12\nepochs = 7\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[train]\nepochs = 9\n')
    c = config.load(child, ["train.learning_rate=2", "data.areas=[1, 2]", "model.backbone=pointnet2", "model.pcff=false"])
    assert (c["train"]["batch_size"], c["train"]["epochs"]) == (12, 9)
    assert c["train"]["learning_rate"] == 2.0 and isinstance(c["train"]["learning_rate"], float)
    assert c["data"]["areas"] == [1, 2] and c["model"]["backbone"] == "pointnet2" and c["model"]["pcff"] is False


def test_unknown_key_names_the_file_and_suggests(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nbatch_sise = 8\n")
    with pytest.raises(config.ConfigError, match=r"bad\.toml: unknown key train\.batch_sise \(did you mean 'batch_size'\?\)"):
        config.load(path)


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("train.batch_size=eight", r"train\.batch_size must be int"),
        ("train.batch_size", r"expected section\.key=value"),
        ("trian.epochs=3", r"unknown section \[trian\] \(did you mean 'train'\?\)"),
        ("model.pcff=1", r"model\.pcff must be bool"),
        ("data.areas=[1, 'x']", r"data\.areas must be list"),
    ],
)
def test_bad_overrides(override, pattern):
    with pytest.raises(config.ConfigError, match=pattern):
        config.load(None, [override])


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(CONFIGS) == 17 and "ablations/09_rs" in config.names() and "scannet" in config.names()
    # They live at the top of the repository (configs/), the package's data through jsnet_tf/configs.
    repository = pathlib.Path(__file__).resolve().parents[1]
    assert (repository / "configs" / "scannet.toml").is_file()
    assert config.CONFIG_DIR.resolve() == (repository / "configs").resolve()
    shipped = config.CONFIG_DIR / "shapenet_part.toml"
    for given in ("shapenet_part", "shapenet_part.toml", "configs/shapenet_part.toml"):
        assert config.find(given) == shipped
    assert config.load("demo") == config.load(config.CONFIG_DIR / "demo.toml")
    assert config.load("ablations/09_rs")["data"]["sampling"] == "resample"
    (tmp_path / "demo.toml").write_text("[train]\nepochs = 3\n")  # a file of that name wins
    assert config.find("demo.toml") == tmp_path / "demo.toml" and config.load("demo.toml")["train"]["epochs"] == 3
    with pytest.raises(config.ConfigError, match=r"^s3dis_area9: no such config file, nor a shipped config \(one of: ablations/01"):
        config.load("s3dis_area9")


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(config.ConfigError, match="no such config file"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("[train\n")
    with pytest.raises(config.ConfigError, match="broken.toml"):
        config.load(bad)
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\n')
    with pytest.raises(config.ConfigError, match="loops back"):
        config.load(loop)


def test_the_default_sampling_is_the_originals_and_model_selection_leaks_nothing():
    cfg = config.load()
    assert cfg["data"]["sampling"] == "resample" and cfg["data"]["validation_rooms"] == 0.0
    assert cfg["train"]["select_on_test_area"] is False and cfg["train"]["early_stopping_patience"] == 0


@pytest.mark.parametrize("override, message", [
    ("data.sampling=fixd", "data.sampling must be one of resample, fixed, random_corners, got 'fixd' (did you mean 'fixed'?)"),
    ("data.dataset=matterport", "data.dataset must be one of s3dis, shapenet, scannet, got 'matterport'"),
    ("model.backbone=pointnet", "model.backbone must be one of pointconv, pointnet2, got 'pointnet'"),
    ("data.validation_rooms=true", "data.validation_rooms must be float like 0.0, got True"),
    ("data.validation_rooms=[1, 2]", "data.validation_rooms must be float like 0.0, got [1, 2]"),
    ("model.radii=[0.1, 0.2, 0.4]", "model.radii needs 4 values (one per encoder level), got [0.1, 0.2, 0.4]"),
    ("model.npoints=[1024, 256, 64, 32, 16]", "model.npoints needs 4 values (one per encoder level)"),
])
def test_word_valued_and_two_typed_keys_are_checked(override, message):
    with pytest.raises(config.ConfigError) as error:
        config.load(None, [override])
    assert message in str(error.value)


def test_validation_rooms_take_a_fraction_or_room_names():
    assert config.load(None, ["data.validation_rooms=0.1"])["data"]["validation_rooms"] == 0.1
    names = config.load(None, ['data.validation_rooms=["Area_1_office_1", "Area_2_hallway_3"]'])["data"]["validation_rooms"]
    assert names == ["Area_1_office_1", "Area_2_hallway_3"]


def test_differences_name_each_changed_key():
    a = {"model": {"pcff": True, "npoints": [1, 2]}, "num_points": 4096}
    b = {"model": {"pcff": False, "npoints": [1, 2], "new": 1}, "num_points": 4096}
    assert config.differences(a, b) == "model.new: '(absent)' -> 1; model.pcff: True -> False"
    assert config.differences(a, a) == ""


# ------------------------------------------------------------------------------------------------
# Ranges
# ------------------------------------------------------------------------------------------------

def _numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_every_numeric_key_has_a_range_and_every_rule_a_key():
    numeric = {(s, k) for s, table in config.DEFAULTS.items() for k, v in table.items()
               if _numeric(v) or (isinstance(v, list) and v and all(_numeric(x) for x in v))}
    assert numeric == set(config.RANGES)
    assert set(config.LIST_RULES) <= numeric


def test_the_defaults_lie_in_their_ranges(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(config.to_toml(config.DEFAULTS))  # a file: every value goes through the checks
    assert config.load(path) == config.DEFAULTS


def _edges(text, integer):
    """[(value, accepted)] at each finite end of an interval written as in config.RANGES: the end
    and its neighbour (the next integer, or the next float) on the other side, parsed here
    independently of config.interval."""
    step = (lambda x, toward: x + (1 if toward > x else -1)) if integer else math.nextafter
    kind = int if integer else float
    if text.startswith(">="):
        bound = kind(float(text[2:]))
        return [(bound, True), (kind(step(bound, -math.inf)), False)]
    if text.startswith(">"):
        bound = kind(float(text[1:]))
        return [(bound, False), (kind(step(bound, math.inf)), True)]
    low, high = (kind(float(x)) for x in text[1:-1].split(","))
    low_in, high_in = text[0] == "[", text[-1] == "]"
    return [
        (low, low_in), (step(low, -math.inf if low_in else math.inf), not low_in),
        (high, high_in), (step(high, math.inf if high_in else -math.inf), not high_in),
    ]


def _range_cases():
    for (section, key), text in sorted(config.RANGES.items()):
        default = config.DEFAULTS[section][key]
        integer = isinstance(default[0] if isinstance(default, list) else default, int)
        for edge, accepted in _edges(text, integer):
            # A list takes the edge as its last value (npoints stays non-increasing).
            value = default[:-1] + [edge] if isinstance(default, list) else edge
            yield pytest.param(section, key, text, value, accepted, id=f"{section}.{key}={value}")


@pytest.mark.parametrize("section, key, text, value, accepted", list(_range_cases()))
def test_each_range_accepts_its_edge_and_refuses_just_beyond(section, key, text, value, accepted):
    override = f"{section}.{key}={config.toml_value(value)}"
    if accepted:
        assert config.load(None, [override])[section][key] == value
        return
    with pytest.raises(config.ConfigError) as error:
        config.load(None, [override])
    wanted = text if text.startswith(">") else f"in {text}"
    each = " each" if isinstance(value, list) else ""
    assert str(error.value) == f"override {override!r}: {section}.{key} must be {wanted}{each}, got {value!r}"


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("eval.min_block_points=0", "eval.min_block_points must be >= 1, got 0"),
    ("model.dropout=1", "model.dropout must be in [0, 1), got 1"),
    ("train.decay_rate=0.0", "train.decay_rate must be in (0, 1], got 0.0"),
    ("eval.gap=1.0", "eval.gap must be in (0, 1), got 1.0"),
    ("train.seed=4294967296", "train.seed must be in [0, 4294967295], got 4294967296"),
    ("data.validation_rooms=1", "data.validation_rooms must be in [0, 1), got 1"),
    ("train.learning_rate=inf", "train.learning_rate must be a finite number > 0, got inf"),
    ("eval.bandwidth=nan", "eval.bandwidth must be a finite number > 0, got nan"),
    ("model.radii=[0.1, 0.2, 0.0, 0.8]", "model.radii must be > 0 each, got [0.1, 0.2, 0.0, 0.8]"),
    ("data.areas=[5, 0]", "data.areas must be >= 1 each, got [5, 0]"),
    ("model.npoints=[256, 512, 64, 32]", "model.npoints must be non-increasing (each encoder level samples its centres "
                                         "among the previous level's), got [256, 512, 64, 32]"),
    ('data.validation_rooms=["Area_1_office_1", ""]', "data.validation_rooms must be non-empty room names, "
                                                      "got ['Area_1_office_1', '']"),
])
def test_out_of_range_overrides_are_one_line_naming_the_override_and_key(override, message):
    with pytest.raises(config.ConfigError) as error:
        config.load(None, [override])
    assert str(error.value) == f"override {override!r}: {message}"


def test_out_of_range_values_in_a_file_name_the_file(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text("[eval]\nbandwidth = 0.0\n")
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[train]\nepochs = 3\n')
    with pytest.raises(config.ConfigError) as error:
        config.load(child)
    assert str(error.value) == f"{base.resolve()}: eval.bandwidth must be > 0, got 0.0"


def test_values_that_mean_off_or_default_stay_allowed():
    c = config.load(None, ["data.blocks_per_room=0", "data.validation_rooms=[]", "train.early_stopping_patience=0",
                           "model.dropout=0.0", "train.disc_weight=0", "model.npoints=[64, 64, 64, 64]", "data.areas=[]"])
    assert (c["data"]["blocks_per_room"], c["data"]["validation_rooms"], c["train"]["disc_weight"]) == (0, [], 0.0)
    assert c["model"]["npoints"] == [64, 64, 64, 64] and c["data"]["areas"] == []
