"""The S3DIS tables of the JSNet paper, one command each:

    python -m jsnet_tf.experiments {table1,table2,table4,sixfold} --data_dir DIR --workdir DIR
        [--quick] [--rows 1,9] [--dry_run] [--every_point] [--seeds N]

table1: instance metrics (mCov, mWCov, mRec, mPrec) on Area 5 and 6-fold; table2: semantic
metrics (oAcc, mAcc, mIoU) on Area 5 and 6-fold; table4: the ablation rows on Area 5
(configs/ablations/, one TOML a row, each saying how we read the row); sixfold: the six folds
and their merged metrics. Every run a table needs is trained (train.py) and evaluated
(evaluate.py) as its own subprocess, with the paper's test protocol (one num_points sample per
block, `eval.label_all_points=false`; `--every_point` adds the every-point protocol as extra,
labelled rows) on the last epoch (ES rows: the checkpoint of the lowest validation loss).

Runs live in `<workdir>/<table>/<row>/area<k>`; the full JSNet of Tables 1 and 2, the six folds
and Table 4's row 9 (RS) are one model, in `<workdir>/shared/jsnet/area<k>`. A run is finished
when its `eval_<protocol>/results.json` was made with the same settings from a run folder whose
config.toml has this row's data, model and train keys: finished runs are reused, unfinished ones
resume (train.py after its last epoch, evaluate.py per room). A workdir holding a run of another
config is refused before anything runs, naming the run and the keys that differ.

The table (ours, and beside it the paper's published number where one is known; above ours, the
paper's rows of the methods it compares with) is printed and written to `<workdir>/<table>.md`
and `<workdir>/<table>.json`. Tables with instance metrics (1, 4, sixfold) also carry AP, AP50
and AP25 (the ScanNet benchmark's rules, jsnet_tf.metrics.InstanceAP) as extra columns marked as
beyond the paper, whose columns stay as they were.

`--seeds N` trains and evaluates every run with N seeds: seed 0 is the run above (reused), seed
s > 0 lives in `<folder>/seed<s>/area<k>` and sets train.seed = s (initialisation, data order,
dropout, validation rooms) and eval.seed = s (the test protocol's block samples). The tables then
give, for every metric, the mean over the seeds and the sample standard deviation (mean ± std),
and the JSON also each seed's value, the minimum and the maximum. `--quick` runs the same commands
with tiny budgets, on a synthetic set generated into --data_dir when it holds no prepared data:
its numbers are meaningless and the table says so. `--dry_run` lists the runs and their status
(done / partial / to do) with the training steps and test blocks they need, and a time when
`--seconds_per_step` and `--blocks_per_second` (measured on the target GPU) are given.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import subprocess
import sys

from jsnet_tf import config as config_lib
from jsnet_tf import metrics
from jsnet_tf.errors import UserError
from jsnet_tf.files import write_text_atomic

CONFIGS = config_lib.CONFIG_DIR

INSTANCE_METRICS = ("mCov", "mWCov", "mRec", "mPrec")
SEMANTIC_METRICS = ("mAcc", "oAcc", "mIoU")  # the column order of the paper's Table 2
ALL_METRICS = INSTANCE_METRICS + SEMANTIC_METRICS

AP_METRICS = ("AP", "AP50", "AP25")  # beyond the paper: instance AP by the ScanNet benchmark's rules

# The JSNet paper's (Zhao & Tao, AAAI 2020) Tables 1, 2 and 4, in percent, as recorded in the
# project's reference notes (reference/jsnet.md, "The paper's tables, whole"). The single folds other
# than Area 5 have no published number.
PAPER_SOURCE = "JSNet paper (Zhao & Tao, AAAI 2020), Tables 1, 2 and 4, as recorded in the project's reference notes"
PAPER_AREA5 = {"mCov": 48.7, "mWCov": 51.5, "mRec": 46.9, "mPrec": 62.1, "oAcc": 87.7, "mAcc": 61.4, "mIoU": 54.5}
PAPER_6FOLD = {"mCov": 54.1, "mWCov": 58.0, "mRec": 53.9, "mPrec": 66.9, "oAcc": 88.7, "mAcc": 71.7, "mIoU": 61.7}
# Table 4 (ablations on Area 5) reports mPrec and mIoU per row.
PAPER_TABLE4 = {
    "1": (52.3, 52.7), "2": (55.9, 53.0), "3": (58.6, 54.5), "4": (56.9, 53.5), "5": (57.2, 53.5),
    "6": (58.6, 54.3), "7": (57.6, 54.3), "8": (58.7, 54.4), "9": (62.1, 54.5), "10": (62.9, 55.0),
}
# Bottom-up methods' published ScanNet v2 val instance segmentation (AP, AP50, AP25), from their
# repositories' READMEs; the table labels them so, and ours as ours.
SCANNET_PUBLISHED = (("PointGroup", (35.2, 57.1, 71.4)), ("HAIS", (44.1, 64.4, 75.7)), ("SoftGroup", (45.8, 67.4, 79.1)))

# The rows of the methods Tables 1 and 2 compare JSNet with (the paper's own numbers; a metric a
# method does not report is missing).
PAPER_COMPARISONS = {
    ("table1", "area5"): (
        ("SGPN", {"mCov": 32.7, "mWCov": 35.5, "mRec": 28.7, "mPrec": 36.0}),
        ("ASIS", {"mCov": 44.6, "mWCov": 47.8, "mRec": 42.4, "mPrec": 55.3}),
    ),
    ("table1", "6fold"): (
        ("SGPN", {"mCov": 37.9, "mWCov": 40.8, "mRec": 31.2, "mPrec": 38.2}),
        ("MT-PNet", {"mPrec": 24.9}),
        ("MV-CRF", {"mPrec": 36.3}),
        ("ASIS", {"mCov": 51.2, "mWCov": 55.1, "mRec": 47.5, "mPrec": 63.6}),
        ("3D-BoNet", {"mRec": 47.6, "mPrec": 65.6}),
    ),
    ("table2", "area5"): (
        ("PointNet", {"mAcc": 52.1, "oAcc": 83.5, "mIoU": 43.4}),
        ("SEGCloud", {"mAcc": 57.4, "mIoU": 48.9}),
        ("RSNet", {"mAcc": 59.4, "mIoU": 51.9}),
        ("3P-RNN", {"mAcc": 71.3, "oAcc": 85.7, "mIoU": 53.4}),
        ("ASIS", {"mAcc": 60.9, "oAcc": 86.9, "mIoU": 53.4}),
    ),
    ("table2", "6fold"): (
        ("PointNet", {"mAcc": 60.3, "oAcc": 80.3, "mIoU": 48.9}),
        ("3P-RNN", {"mAcc": 73.6, "oAcc": 86.9, "mIoU": 56.3}),
        ("MT-PNet", {"oAcc": 86.7}),
        ("MV-CRF", {"oAcc": 87.4}),
        ("ASIS", {"mAcc": 70.1, "oAcc": 86.2, "mIoU": 59.3}),
    ),
}

# Test protocols: the folder of a run's evaluation and the value of eval.label_all_points.
PROTOCOLS = {
    "original": ("eval_original", False, "one num_points sample per block (the paper's)"),
    "every_point": ("eval_every_point", True, "every point of every block"),
}

# Quick mode: tiny budgets on a tiny synthetic set of the table's dataset (numbers meaningless,
# commands the same).
QUICK_POINTS = 512
QUICK_OVERRIDES = ("model.npoints=[256, 64, 32, 16]", "train.batch_size=4", "train.epochs=1", "eval.batch_size=4")


class ExperimentError(UserError, ValueError):
    """A table that cannot be run as asked (unknown table or row, a workdir of other runs,
    missing data, a failed subprocess)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One trained model: `folder` (under the workdir) is train.py's --workdir, `config` its
    --config, `area` the test area it holds out; `seed` > 0: the run with train.seed and eval.seed
    set to it, in `<folder>/seed<seed>` (seed 0: the config's own seeds, in `<folder>`)."""

    folder: str
    config: pathlib.Path
    area: int | None  # None: a dataset without areas (the run folder is train.py's workdir itself)
    seed: int = 0

    @property
    def seed_folder(self):
        return self.folder if self.seed == 0 else f"{self.folder}/seed{self.seed}"

    def run_dir(self, workdir):
        folder = pathlib.Path(workdir) / self.seed_folder
        return folder if self.area is None else folder / f"area{self.area}"

    def with_seed(self, seed):
        return dataclasses.replace(self, seed=int(seed))


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """A table row: the metrics of its runs' test rooms together (several runs: 6-fold)."""

    key: str
    label: str
    runs: tuple[RunSpec, ...]
    paper: dict
    comparisons: tuple = ()  # (method, {metric: percent}) rows of the paper's other methods


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    row_title: str
    columns: tuple[str, ...]  # the paper's columns
    rows: tuple[RowSpec, ...]
    extra_columns: tuple[str, ...] = ()  # beyond the paper (AP_METRICS)
    dataset: str = "s3dis"  # the task of its runs (jsnet_tf.tasks)
    comparison_label: str = "paper"  # where the comparison rows come from
    protocol: str = "original"  # the test protocol of its published numbers (PROTOCOLS)
    extra_note: str = "beyond the paper (instance AP by the ScanNet benchmark's rules; the paper reports none)"
    source: str = PAPER_SOURCE  # where the published numbers come from


def _jsnet(area):
    return RunSpec("shared/jsnet", CONFIGS / "s3dis_area5.toml", area)


def _six_folds():
    return tuple(_jsnet(area) for area in range(1, 7))


# Table 4: (row, folder name, label). Row 9 (RS) is the full model of Tables 1 and 2: its config
# equals configs/s3dis_area5.toml and its run is the shared one.
ABLATIONS = (
    ("1", "01_base_network", "base network"),
    ("2", "02_backbone", "backbone"),
    ("3", "03_pcff", "+PCFF"),
    ("4", "04_if", "+IF"),
    ("5", "05_sf", "+SF"),
    ("6", "06_if_sf", "+IF+SF"),
    ("7", "07_full", "full"),
    ("8", "08_full_es", "+ES"),
    ("9", "09_rs", "RS"),
    ("10", "10_rs_es", "RS+ES"),
)
SHARED_ABLATION = "09_rs"


def _ablation_run(name):
    folder = "shared/jsnet" if name == SHARED_ABLATION else f"table4/{name}"
    return RunSpec(folder, CONFIGS / "ablations" / f"{name}.toml", 5)


def _pick(numbers, columns):
    return {k: numbers[k] for k in columns if k in numbers}


def _paper_row(table, key, fold_numbers, columns):
    return RowSpec(key, {"area5": "Area 5", "6fold": "6-fold"}[key], _six_folds() if key == "6fold" else (_jsnet(5),),
                   _pick(fold_numbers, columns), tuple((method, _pick(numbers, columns))
                                                       for method, numbers in PAPER_COMPARISONS[(table, key)]))


TABLES = {
    "table1": TableSpec(
        "table1", "Table 1: instance segmentation on S3DIS", "test", INSTANCE_METRICS,
        (_paper_row("table1", "area5", PAPER_AREA5, INSTANCE_METRICS),
         _paper_row("table1", "6fold", PAPER_6FOLD, INSTANCE_METRICS)),
        AP_METRICS,
    ),
    "table2": TableSpec(
        "table2", "Table 2: semantic segmentation on S3DIS", "test", SEMANTIC_METRICS,
        (_paper_row("table2", "area5", PAPER_AREA5, SEMANTIC_METRICS),
         _paper_row("table2", "6fold", PAPER_6FOLD, SEMANTIC_METRICS)),
    ),
    "table4": TableSpec(
        "table4", "Table 4: ablation on S3DIS Area 5", "row", ALL_METRICS,
        tuple(RowSpec(key, f"{key} {label}", (_ablation_run(name),), dict(zip(("mPrec", "mIoU"), PAPER_TABLE4[key])))
              for key, name, label in ABLATIONS),
        AP_METRICS,
    ),
    "sixfold": TableSpec(
        "sixfold", "JSNet on each S3DIS fold and 6-fold", "test", ALL_METRICS,
        tuple(RowSpec(f"area{a}", f"Area {a}", (_jsnet(a),), PAPER_AREA5 if a == 5 else {}) for a in range(1, 7))
        + (RowSpec("6fold", "6-fold (all six)", _six_folds(), PAPER_6FOLD),),
        AP_METRICS,
    ),
    # ScanNet v2 val: JSNet (ours; the paper has no ScanNet result) beside the bottom-up methods'
    # published val numbers (their READMEs), AP / AP50 / AP25 by the benchmark's rules.
    "scannet": TableSpec(
        "scannet", "ScanNet v2 val: instance segmentation (ours; the JSNet paper has no ScanNet experiment)", "split",
        AP_METRICS + ("mIoU",),
        (RowSpec("val", "val", (RunSpec("scannet/jsnet", CONFIGS / "scannet.toml", None),), {},
                 tuple((method, dict(zip(AP_METRICS, numbers))) for method, numbers in SCANNET_PUBLISHED)),),
        ("mCov", "mWCov", "mPrec", "mRec"), dataset="scannet", comparison_label="published val, its README",
        protocol="every_point", extra_note="JSNet's own instance metrics (the paper's), which the other methods do not report",
        source="PointGroup, HAIS and SoftGroup: the val results in their repositories' READMEs; the JSNet paper has no "
               "ScanNet result, so every JSNet number here is ours",
    ),
}


def table_spec(name, rows=None):
    """The table `name`, restricted to the row keys in `rows` (all when None)."""
    if name not in TABLES:
        raise ExperimentError(f"unknown table {name!r}: choose one of {', '.join(TABLES)}")
    spec = TABLES[name]
    if not rows:
        return spec
    keys = [row.key for row in spec.rows]
    unknown = [r for r in rows if r not in keys]
    if unknown:
        raise ExperimentError(f"{name} has no row {', '.join(unknown)} (its rows: {', '.join(keys)})")
    return dataclasses.replace(spec, rows=tuple(row for row in spec.rows if row.key in rows))


# ------------------------------------------------------------------------------------- planning


@dataclasses.dataclass
class PlannedRun:
    """A run with the config it must have and how it is evaluated."""

    spec: RunSpec
    cfg: dict
    run_dir: pathlib.Path
    which: str  # weights: "latest" (the last epoch) or "best" (lowest validation loss: ES rows)
    overrides: tuple[str, ...]  # train.py --set overrides (quick budgets)


def quick_overrides(num_points):
    return (f"data.num_points={num_points}",) + QUICK_OVERRIDES


def check_seeds(seeds):
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ExperimentError(f"--seeds must be a whole number of at least 1 (seed 0 is the paper's single run), got {seeds}")


def seed_overrides(seed):
    """The config changes of a seed run (none for seed 0: the config's own seeds)."""
    return () if seed == 0 else (f"train.seed={seed}", f"eval.seed={seed}")


def plan(spec, workdir, data_dir, overrides=(), seeds=1):
    """The distinct runs of a table (rows sharing a run share it), for each of `seeds` seeds, with
    their configs."""
    check_seeds(seeds)
    planned = {}
    for seed in range(seeds):
        for row in spec.rows:
            for run in (r.with_seed(seed) for r in row.runs):
                if run.run_dir(workdir) in planned:
                    continue
                run_overrides = (*overrides, *seed_overrides(seed))
                cfg = config_lib.load(run.config, [
                    *run_overrides, f"data.data_dir={config_lib.toml_string(data_dir)}",
                    *([] if run.area is None else [f"data.areas=[{run.area}]"]),
                ])
                which = "best" if cfg["train"]["early_stopping_patience"] > 0 else "latest"
                planned[run.run_dir(workdir)] = PlannedRun(run, cfg, run.run_dir(workdir), which, run_overrides)
    return list(planned.values())


TRAINED_SECTIONS = ("data", "model", "train")  # what a trained model is; [eval] can change after training


def _trained_keys(cfg):
    sections = {section: dict(cfg.get(section, {})) for section in TRAINED_SECTIONS}
    if "data_dir" in sections["data"]:  # the same folder, however it was written
        sections["data"]["data_dir"] = str(pathlib.Path(sections["data"]["data_dir"]).resolve())
    return sections


def recorded_differences(run):
    """How the run folder's recorded config differs in its data, model and train keys from the
    one the row needs ('section.key: recorded -> needed; ...'; empty when it has none or the same)."""
    path = run.run_dir / "config.toml"
    if not path.exists():
        return ""
    return config_lib.differences(_trained_keys(config_lib.load(path)), _trained_keys(run.cfg))


def check_workdir(runs):
    """Refuses (ExperimentError, one line) a workdir where a run folder holds another config."""
    for run in runs:
        differences = recorded_differences(run)
        if differences:
            raise ExperimentError(
                f"{run.run_dir} holds a run of another config ({differences}); nothing was changed: use another --workdir"
            )


def expected_eval(run, protocol):
    return {**run.cfg["eval"], "label_all_points": PROTOCOLS[protocol][1]}


def results_path(run, protocol):
    return run.run_dir / PROTOCOLS[protocol][0] / "results.json"


def is_evaluated(run, protocol):
    """Whether the run's evaluation under `protocol` exists and was made with its settings."""
    path = results_path(run, protocol)
    if not path.exists():
        return False
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    selection = result.get("model_selection", {}).get("which", run.which)
    return result.get("area") == run.spec.area and result.get("eval") == expected_eval(run, protocol) and selection == run.which


def run_status(run, protocols):
    """The run's state: done, partial (trained or evaluated in part), to do, or other config
    (its folder holds another run)."""
    differences = recorded_differences(run)
    if differences:
        return f"other config ({differences})"
    if all(is_evaluated(run, p) for p in protocols) and (run.run_dir / "config.toml").exists():
        return "done"
    if not run.run_dir.exists():
        return "to do"
    epochs = run.run_dir / "metrics.json"  # train.py's per-epoch record
    try:
        trained = json.loads(epochs.read_text())[-1]["epoch"] if epochs.exists() else 0
    except (OSError, ValueError, LookupError, TypeError):
        trained = "?"
    return f"partial ({trained}/{run.cfg['train']['epochs']} epochs trained)"


# ------------------------------------------------------------------------------------- running


def launch(command):
    """Runs one subprocess (its output goes to ours); returns its exit status."""
    return subprocess.run(command, check=False).returncode


def _launch_checked(command, what):
    status = launch(command)
    if status != 0:
        raise ExperimentError(f"{what} failed (exit status {status}): {shlex.join(command)}")


def config_name(path):
    """A shipped config's name (as --config takes it)."""
    return path.relative_to(CONFIGS).with_suffix("").as_posix()


def _area_args(run):
    return [] if run.spec.area is None else ["--area", str(run.spec.area)]


def train_command(run, workdir, data_dir):
    return [
        sys.executable, "-m", "jsnet_tf.train", "--config", str(run.spec.config), *_area_args(run),
        "--data_dir", str(data_dir), "--workdir", str(pathlib.Path(workdir) / run.spec.seed_folder),
        *(f"--set={o}" for o in run.overrides),
    ]


def evaluate_command(run, workdir, data_dir, protocol):
    settings = [f"--set=eval.{k}={config_lib.toml_value(v)}" for k, v in expected_eval(run, protocol).items()]
    return [
        sys.executable, "-m", "jsnet_tf.evaluate", "--workdir", str(pathlib.Path(workdir) / run.spec.seed_folder),
        *_area_args(run), "--data_dir", str(data_dir), "--out", str(results_path(run, protocol).parent),
        "--which", run.which, "--nopictures", *settings,
    ]


def execute(runs, workdir, data_dir, protocols):
    """Trains and evaluates every run that is not done, one subprocess at a time."""
    todo = [run for run in runs if run_status(run, protocols) != "done"]
    for index, run in enumerate(todo, 1):
        name = run.run_dir.relative_to(workdir)
        print(f"[{index}/{len(todo)}] training {name} ({config_name(run.spec.config)})", flush=True)
        _launch_checked(train_command(run, workdir, data_dir), f"training {name}")
        for protocol in protocols:
            if not is_evaluated(run, protocol):
                print(f"[{index}/{len(todo)}] evaluating {name} ({PROTOCOLS[protocol][2]})", flush=True)
                _launch_checked(evaluate_command(run, workdir, data_dir, protocol), f"evaluating {name}")
                if not is_evaluated(run, protocol):
                    raise ExperimentError(f"evaluating {name} wrote no matching {results_path(run, protocol)}")
    return len(todo)


def table_task(spec):
    """The task (dataset) of a table's runs."""
    from jsnet_tf import tasks

    return tasks.get(spec.dataset)


def ensure_data(task, data_dir, folds, quick):
    """Checks that `data_dir` is prepared for `folds`; in quick mode generates and prepares the
    task's tiny synthetic set there when it is not."""
    missing = task.missing_data(data_dir, folds)
    if not missing:
        return
    if not quick:
        raise ExperimentError(
            f"{data_dir} is not prepared for {', '.join(task.fold_description(f) for f in folds)} ({missing[0]} is "
            f"missing): run {task.prepare_command} --raw <{task.title} folder> --out {data_dir}"
        )
    print(f"quick: generating a tiny synthetic {task.title} and preparing it in {data_dir}", flush=True)
    for command in task.quick_data_commands(data_dir, QUICK_POINTS):
        _launch_checked(command, "generating and preparing the synthetic set")
    missing = task.missing_data(data_dir, folds)
    if missing:
        raise ExperimentError(f"{data_dir}: the synthetic set was prepared but {missing[0]} is missing")


# ------------------------------------------------------------------------------------- the table


def row_result(row, workdir, protocol, seed=0):
    """The metrics of a row for one seed (fractions, as Evaluator.result): one run's results.json,
    or the merge of its runs' counts (6-fold: the union of the six test areas' rooms)."""
    results = []
    for run in (r.with_seed(seed) for r in row.runs):
        path = run.run_dir(workdir) / PROTOCOLS[protocol][0] / "results.json"
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise ExperimentError(f"{path}: not a readable evaluation result ({error})") from None
    if len(results) == 1:
        return results[0]
    merged = metrics.Evaluator.from_result(results[0])
    for other in results[1:]:
        merged.merge(metrics.Evaluator.from_result(other))
    return merged.result()


def spread(values):
    """Mean, sample standard deviation (None for one value), min, max of the values that are
    defined (None when none is)."""
    import numpy as np

    defined = np.array([v for v in values if v is not None], np.float64)
    if defined.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "seeds": list(values)}
    return {"mean": float(defined.mean()), "std": float(defined.std(ddof=1)) if defined.size > 1 else None,
            "min": float(defined.min()), "max": float(defined.max()), "seeds": list(values)}


def table_data(spec, workdir, protocols, quick, seeds=1):
    """The table as a JSON-ready dict: ours (the mean over the seeds; with several seeds also
    their spread) and the paper's numbers in percent per row."""
    columns = spec.columns + spec.extra_columns
    rows = []
    for row in spec.rows:
        ours, spreads = {}, {}
        for protocol in protocols:
            per_seed = []
            for seed in range(seeds):
                result = row_result(row, workdir, protocol, seed)
                per_seed.append({m: None if result.get(m) is None else 100.0 * result[m] for m in columns})
            spreads[protocol] = {m: spread([numbers[m] for numbers in per_seed]) for m in columns}
            ours[protocol] = {m: spreads[protocol][m]["mean"] for m in columns}
        rows.append({
            "key": row.key, "label": row.label,
            "runs": [str(run.with_seed(seed).run_dir(workdir).relative_to(workdir)) for seed in range(seeds) for run in row.runs],
            "paper": row.paper, "comparisons": [{"method": m, "paper": numbers} for m, numbers in row.comparisons],
            "ours": ours, **({"spread": spreads} if seeds > 1 else {}),
        })
    return {
        "table": spec.name, "title": spec.title, "row_title": spec.row_title, "quick": quick, "units": "percent",
        "protocols": {p: PROTOCOLS[p][2] for p in protocols}, "main_protocol": spec.protocol, "columns": list(spec.columns),
        "beyond_paper": list(spec.extra_columns), "beyond_paper_note": spec.extra_note, "seeds": seeds,
        "paper_source": spec.source,
        "comparison_label": spec.comparison_label, "rows": rows,
    }


def _cell(ours, paper, std=None, seeds=1):
    text = "-" if ours is None else f"{ours:.1f}"
    if seeds > 1 and ours is not None:
        text += " ± " + ("-" if std is None else f"{std:.1f}")
    return f"{text} ({paper:.1f})" if paper is not None else text


def table_markdown(data):
    """The table in the paper's layout: one line a row (and protocol), a column a metric; each
    cell ours (with several seeds: mean ± standard deviation), then the paper's published number
    in brackets where one is known. Above each row, the paper's rows of the methods it compares
    with; columns beyond the paper are marked with *."""
    protocols = list(data["protocols"])
    several = len(protocols) > 1
    seeds = data.get("seeds", 1)
    lines = [f"## {data['title']}", ""]
    if data["quick"]:
        lines += ["**quick run: not comparable** (tiny synthetic data and training budgets)", ""]
    unknown = [row["label"] for row in data["rows"] if not row["paper"] and data["paper_source"] == PAPER_SOURCE]
    ours = "ours" if seeds == 1 else f"ours, mean ± standard deviation over {seeds} seeds"
    lines += [
        f"Test protocol: {'; '.join(f'{p}: {text}' for p, text in data['protocols'].items())}. "
        f"Percent; each cell: {ours} (paper's published number, where known).",
        f"Paper's numbers: {data['paper_source']}" + ("; for " + ", ".join(unknown) + ": none published." if unknown else "."),
    ]
    extra = data.get("beyond_paper", [])
    if extra:
        note = data.get("beyond_paper_note", "beyond the paper")
        lines.append(f"{', '.join(m + '*' for m in extra)}: {note}.")
    lines.append("")
    columns = data["columns"] + extra
    header = [data["row_title"]] + (["protocol"] if several else []) + data["columns"] + [m + "*" for m in extra]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in data["rows"]:
        main = data.get("main_protocol", "original")
        for comparison in row.get("comparisons", []):
            cells = [f"({comparison['paper'][m]:.1f})" if m in comparison["paper"] else "" for m in columns]
            label = f"{row['label']}: {comparison['method']} ({data.get('comparison_label', 'paper')})"
            lines.append("| " + " | ".join([label] + ([main] if several else []) + cells) + " |")
        for protocol in protocols:
            paper = row["paper"] if protocol == main else {}
            stds = row.get("spread", {}).get(protocol, {})
            cells = [_cell(row["ours"][protocol][m], paper.get(m), stds.get(m, {}).get("std"), seeds) for m in columns]
            label = row["label"] if not row.get("comparisons") else f"{row['label']}: JSNet (ours)"
            lines.append("| " + " | ".join([label] + ([protocol] if several else []) + cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(spec, workdir, protocols, quick, seeds=1):
    """Writes <workdir>/<table>.md and .json; returns the markdown."""
    data = table_data(spec, workdir, protocols, quick, seeds)
    markdown = table_markdown(data)
    workdir = pathlib.Path(workdir)
    write_text_atomic(workdir / f"{spec.name}.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(workdir / f"{spec.name}.md", markdown)
    return markdown


# ------------------------------------------------------------------------------------- dry run


def run_cost(run):
    """(training steps at most, test blocks) of a run, from the prepared data."""
    from jsnet_tf import tasks

    return tasks.for_config(run.cfg).run_cost(run.cfg, run.spec.area)


def dry_run(spec, runs, workdir, protocols, seconds_per_step=None, blocks_per_second=None, with_costs=True):
    """The runs of a table with their status (and cost, when the data is prepared) as text."""
    lines = [f"{spec.name}: {len(runs)} run(s) in {workdir}"]
    total = 0.0
    for run in runs:
        status = run_status(run, protocols)
        line = (f"  {run.run_dir.relative_to(workdir)}  config {config_name(run.spec.config)}"
                f"  area {run.spec.area}  weights {run.which}  status: {status}")
        if with_costs:
            steps, blocks = run_cost(run)
            es = " at most" if run.which == "best" else ""
            line += f"  ({steps} training steps{es}, {blocks} test blocks x {len(protocols)} protocol(s))"
            if seconds_per_step and blocks_per_second:
                seconds = steps * seconds_per_step + len(protocols) * blocks / blocks_per_second
                total += 0.0 if status == "done" else seconds
                line += f", about {_duration(seconds)}"
        lines.append(line)
    if with_costs and seconds_per_step and blocks_per_second:
        lines.append(f"left to run: about {_duration(total)} at {seconds_per_step} s a step and "
                     f"{blocks_per_second} test blocks a second (mean-shift and merging not counted)")
    elif not with_costs:
        lines.append("(training steps and test blocks: prepare the data first)")
    return "\n".join(lines)


def _duration(seconds):
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------------- entry point


def run_table(name, workdir, data_dir, quick=False, rows=None, every_point=False, dry=False,
              seconds_per_step=None, blocks_per_second=None, seeds=1):
    """Trains and evaluates what table `name` needs (every run with `seeds` seeds) and writes it;
    returns the text to print."""
    check_seeds(seeds)
    spec = table_spec(name, rows)
    task = table_task(spec)
    workdir, data_dir = pathlib.Path(workdir).resolve(), pathlib.Path(data_dir).resolve()
    protocols = (spec.protocol,) + (("every_point",) if every_point and spec.protocol != "every_point" else ())
    folds = sorted({run.area for row in spec.rows for run in row.runs}, key=str)
    overrides = ()
    if quick:  # blocks of the prepared data's size, or of the synthetic set that will be prepared
        prepared = not task.missing_data(data_dir, folds)
        overrides = quick_overrides(task.prepared_num_points(data_dir, folds[0]) if prepared else QUICK_POINTS)
    runs = plan(spec, workdir, data_dir, overrides, seeds)
    if dry:
        return dry_run(spec, runs, workdir, protocols, seconds_per_step, blocks_per_second,
                       with_costs=not task.missing_data(data_dir, folds))
    check_workdir(runs)
    ensure_data(task, data_dir, folds, quick)
    execute(runs, workdir, data_dir, protocols)
    return write_table(spec, workdir, protocols, quick, seeds)


def define_flags():
    """The command line's flags (defined only when run as a program)."""
    from absl import flags

    flags.DEFINE_string("data_dir", None, "prepared S3DIS folder (python -m jsnet_tf.data.prepare_s3dis --out); "
                        "with --quick, an empty folder gets a tiny synthetic set")
    flags.DEFINE_string("workdir", None, "where the runs (<table>/<row>/area<k>, shared/jsnet/area<k>) and the "
                        "tables (<table>.md, <table>.json) go")
    flags.DEFINE_bool("quick", False, "tiny budgets (1 epoch, batch 4, 512 points) on the given or a generated "
                      "synthetic set: checks the commands, the numbers are meaningless")
    flags.DEFINE_list("rows", None, "only these rows of the table, e.g. 1,9 for table4 (table1/table2: area5, 6fold; "
                      "sixfold: area1..area6, 6fold)")
    flags.DEFINE_bool("dry_run", False, "list the runs with their status (done / partial / to do) and costs; "
                      "train nothing")
    flags.DEFINE_bool("every_point", False, "also evaluate with every point labelled (extra rows, labelled "
                      "every_point) besides the paper's protocol")
    flags.DEFINE_float("seconds_per_step", None, "with --dry_run: seconds of one training step on the target "
                       "machine, for a time estimate")
    flags.DEFINE_float("blocks_per_second", None, "with --dry_run: test blocks a second through the network on the "
                       "target machine, for a time estimate")
    flags.DEFINE_integer("seeds", 1, "train and evaluate every run with this many seeds (seed 0: the run itself, reused; "
                         "seed s > 0 in <folder>/seed<s>, train.seed = eval.seed = s); the tables give mean ± standard "
                         "deviation, the JSON also each seed, min and max")


def main(argv):
    from absl import app, flags

    FLAGS = flags.FLAGS
    if len(argv) < 2:
        sys.exit(f"experiments: error: give a table: one of {', '.join(TABLES)}")
    if len(argv) > 2:
        sys.exit(f"experiments: error: one table at a time; unexpected arguments: {' '.join(argv[2:])}")
    if argv[1] not in TABLES:
        sys.exit(f"experiments: error: unknown table {argv[1]!r}: choose one of {', '.join(TABLES)}")
    if not FLAGS.data_dir or not FLAGS.workdir:
        raise app.UsageError("--data_dir and --workdir are required")
    try:
        print(run_table(argv[1], FLAGS.workdir, FLAGS.data_dir, quick=FLAGS.quick, rows=FLAGS.rows,
                        every_point=FLAGS.every_point, dry=FLAGS.dry_run, seconds_per_step=FLAGS.seconds_per_step,
                        blocks_per_second=FLAGS.blocks_per_second, seeds=FLAGS.seeds), flush=True)
    except (UserError, OSError) as error:
        sys.exit(f"experiments: error: {error}")


def cli():
    """The `jsnet-experiments` console script (also `python -m jsnet_tf.experiments`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
