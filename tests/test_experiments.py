"""`python -m jsnet_tf.experiments`: the paper's tables from finished runs (fake results.json files
in a fake workdir: no training), reuse of finished runs, refusal of a workdir of other runs,
one line for an unknown table, and one end-to-end quick run of two Table 4 rows."""

import json
import pathlib
import subprocess
import sys
import time

import pytest

from jsnet_tf import config, experiments, metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "jsnet_tf.experiments", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _fake_data_dir(tmp_path, areas=range(1, 7)):
    """A data folder whose lists exist (the runner only checks that they do)."""
    from jsnet_tf.data import pipeline

    data_dir = tmp_path / "data"
    for area in areas:
        for split in ("train", "test"):
            for kind in ("rooms", "blocks"):
                path = pipeline.list_path(data_dir, area, split, kind)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
        (data_dir / "lists" / f"mean_ins_size_woArea{area}.txt").write_text("")
    return data_dir


def _mark_done(run, result, protocol="original"):
    """What train.py and evaluate.py leave behind: the run's config.toml and its results.json."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.toml").write_text(config.to_toml(run.cfg))
    path = experiments.results_path(run, protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"area": run.spec.area, "model_selection": {"which": run.which},
              "eval": experiments.expected_eval(run, protocol), **result}
    path.write_text(json.dumps(record))


def _metrics(**percent):
    return {k: v / 100.0 for k, v in percent.items()}


def test_table_layout_matches_the_paper_with_its_numbers_beside_ours(tmp_path):
    workdir, data_dir = tmp_path / "work", tmp_path / "data"
    spec = experiments.table_spec("table4", ["2", "9"])
    runs = experiments.plan(spec, workdir, data_dir)
    assert [r.run_dir.relative_to(workdir).as_posix() for r in runs] == ["table4/02_backbone/area5", "shared/jsnet/area5"]
    _mark_done(runs[0], _metrics(mCov=40.04, mWCov=41.26, mRec=38.0, mPrec=55.55, oAcc=80.0, mAcc=55.0, mIoU=45.1,
                                 AP=30.0, AP50=50.25, AP25=60.0))
    _mark_done(runs[1], {**_metrics(mCov=47.0, mWCov=50.0, mRec=44.0, mPrec=60.0, oAcc=86.9, mAcc=60.0, mIoU=53.0), "mPrec": None})
    markdown = experiments.write_table(spec, workdir, ("original",), quick=False)
    expected = """\
## Table 4: ablation on S3DIS Area 5

Test protocol: original: one num_points sample per block (the paper's). Percent; each cell: ours (paper's published number, where known).
Paper's numbers: JSNet paper (Zhao & Tao, AAAI 2020), Tables 1, 2 and 4, as recorded in the project's reference notes.
AP*, AP50*, AP25*: beyond the paper (instance AP by the ScanNet benchmark's rules; the paper reports none).

| row | mCov | mWCov | mRec | mPrec | mAcc | oAcc | mIoU | AP* | AP50* | AP25* |
|---|---|---|---|---|---|---|---|---|---|---|
| 2 backbone | 40.0 | 41.3 | 38.0 | 55.5 (55.9) | 55.0 | 80.0 | 45.1 (53.0) | 30.0 | 50.2 | 60.0 |
| 9 RS | 47.0 | 50.0 | 44.0 | - (62.1) | 60.0 | 86.9 | 53.0 (54.5) | - | - | - |
"""
    assert markdown == expected
    assert (workdir / "table4.md").read_text() == expected
    data = json.loads((workdir / "table4.json").read_text())
    assert [row["label"] for row in data["rows"]] == ["2 backbone", "9 RS"]
    assert data["rows"][0]["ours"]["original"]["mCov"] == pytest.approx(40.04)
    assert data["rows"][1]["ours"]["original"]["mPrec"] is None and data["quick"] is False

    # Table 1 on the same shared run: the paper's Area 5 numbers beside ours; quick says so.
    spec1 = experiments.table_spec("table1", ["area5"])
    quick = experiments.write_table(spec1, workdir, ("original",), quick=True)
    assert quick == """\
## Table 1: instance segmentation on S3DIS

**quick run: not comparable** (tiny synthetic data and training budgets)

Test protocol: original: one num_points sample per block (the paper's). Percent; each cell: ours (paper's published number, where known).
Paper's numbers: JSNet paper (Zhao & Tao, AAAI 2020), Tables 1, 2 and 4, as recorded in the project's reference notes.
AP*, AP50*, AP25*: beyond the paper (instance AP by the ScanNet benchmark's rules; the paper reports none).

| test | mCov | mWCov | mRec | mPrec | AP* | AP50* | AP25* |
|---|---|---|---|---|---|---|---|
| Area 5: SGPN (paper) | (32.7) | (35.5) | (28.7) | (36.0) |  |  |  |
| Area 5: ASIS (paper) | (44.6) | (47.8) | (42.4) | (55.3) |  |  |  |
| Area 5: JSNet (ours) | 47.0 (48.7) | 50.0 (51.5) | 44.0 (46.9) | - (62.1) | - | - | - |
"""


def test_six_fold_row_is_the_metrics_of_all_six_areas_rooms_together(tmp_path, rng):
    workdir = tmp_path / "work"
    spec = experiments.table_spec("sixfold", ["6fold"])
    runs = experiments.plan(spec, workdir, tmp_path / "data")
    assert sorted(r.spec.area for r in runs) == [1, 2, 3, 4, 5, 6]
    together = metrics.Evaluator()
    for run in runs:
        alone = metrics.Evaluator()
        for _ in range(2):
            size = int(rng.integers(50, 200))
            sem_gt, sem_pred = rng.integers(0, 13, size), rng.integers(0, 13, size)
            ins_gt, ins_pred = rng.integers(0, 6, size), rng.integers(-1, 6, size)
            alone.add_room(sem_gt, ins_gt, sem_pred, ins_pred)
            together.add_room(sem_gt, ins_gt, sem_pred, ins_pred)
        _mark_done(run, alone.result())
    row = experiments.table_data(spec, workdir, ("original",), quick=False)["rows"][0]
    reference = together.result()
    for key in experiments.ALL_METRICS:
        assert row["ours"]["original"][key] == pytest.approx(100.0 * reference[key]), key
    assert row["paper"] == experiments.PAPER_6FOLD


def test_seed_runs_live_beside_seed_zero_and_set_both_seeds(tmp_path):
    workdir = tmp_path / "work"
    runs = experiments.plan(experiments.table_spec("table4", ["2", "9"]), workdir, tmp_path / "data", seeds=3)
    assert [r.run_dir.relative_to(workdir).as_posix() for r in runs] == [
        "table4/02_backbone/area5", "shared/jsnet/area5", "table4/02_backbone/seed1/area5", "shared/jsnet/seed1/area5",
        "table4/02_backbone/seed2/area5", "shared/jsnet/seed2/area5"]
    assert [(r.cfg["train"]["seed"], r.cfg["eval"]["seed"]) for r in runs] == [(0, 0)] * 2 + [(1, 1)] * 2 + [(2, 2)] * 2
    train = experiments.train_command(runs[2], workdir, tmp_path / "data")
    assert train[train.index("--workdir") + 1] == str(workdir / "table4" / "02_backbone" / "seed1")
    assert "--set=train.seed=1" in train and "--set=eval.seed=1" in train
    evaluate = experiments.evaluate_command(runs[2], workdir, tmp_path / "data", "original")
    assert evaluate[evaluate.index("--workdir") + 1] == str(workdir / "table4" / "02_backbone" / "seed1")
    assert "--set=eval.seed=1" in evaluate
    # Seed 0 is the run of one seed, unchanged.
    assert experiments.plan(experiments.table_spec("table4", ["2", "9"]), workdir, tmp_path / "data")[0].cfg == runs[0].cfg


def test_several_seeds_give_mean_and_standard_deviation_beside_the_papers_number(tmp_path):
    workdir = tmp_path / "work"
    spec = experiments.table_spec("table4", ["9"])
    runs = experiments.plan(spec, workdir, tmp_path / "data", seeds=3)
    for run, (prec, iou) in zip(runs, ((60.0, 50.0), (62.0, 53.0), (64.0, 56.0))):
        _mark_done(run, _metrics(mCov=40, mWCov=41, mRec=42, mPrec=prec, oAcc=80, mAcc=55, mIoU=iou, AP=20, AP50=30, AP25=40))
    markdown = experiments.write_table(spec, workdir, ("original",), quick=False, seeds=3)
    assert "each cell: ours, mean ± standard deviation over 3 seeds (paper's published number, where known)" in markdown
    assert ("| 9 RS | 40.0 ± 0.0 | 41.0 ± 0.0 | 42.0 ± 0.0 | 62.0 ± 2.0 (62.1) | 55.0 ± 0.0 | 80.0 ± 0.0 | 53.0 ± 3.0 (54.5) "
            "| 20.0 ± 0.0 | 30.0 ± 0.0 | 40.0 ± 0.0 |") in markdown
    data = json.loads((workdir / "table4.json").read_text())
    row = data["rows"][0]
    assert data["seeds"] == 3 and row["runs"] == ["shared/jsnet/area5", "shared/jsnet/seed1/area5", "shared/jsnet/seed2/area5"]
    assert row["ours"]["original"]["mPrec"] == pytest.approx(62.0)
    spread = row["spread"]["original"]["mIoU"]
    assert spread["seeds"] == pytest.approx([50.0, 53.0, 56.0]) and (spread["min"], spread["max"]) == pytest.approx((50.0, 56.0))
    assert spread["std"] == pytest.approx(3.0)  # the sample standard deviation (n - 1)


def test_seeds_of_zero_and_a_workdir_of_seed_runs_of_another_config_are_one_line_each(tmp_path):
    workdir, data_dir = tmp_path / "work", _fake_data_dir(tmp_path, [5])
    result = _cli("table4", "--rows", "9", "--seeds", "0", "--data_dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr == ("experiments: error: --seeds must be a whole number of at least 1 (seed 0 is the paper's "
                             "single run), got 0\n")
    assert not workdir.exists()
    other = config.load(experiments.CONFIGS / "s3dis_area5.toml", [f'data.data_dir="{data_dir}"', "train.seed=1",
                                                                 "eval.seed=1", "train.epochs=3"])
    recorded = workdir / "shared" / "jsnet" / "seed1" / "area5" / "config.toml"
    recorded.parent.mkdir(parents=True)
    recorded.write_text(config.to_toml(other))
    before = recorded.read_bytes()
    result = _cli("table4", "--rows", "9", "--seeds", "2", "--data_dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"experiments: error: {recorded.parent} holds a run of another config "
                             "(train.epochs: 3 -> 100); nothing was changed: use another --workdir\n")
    assert recorded.read_bytes() == before and sorted(p.name for p in workdir.rglob("*")) == [
        "area5", "config.toml", "jsnet", "seed1", "shared"]


def test_each_table4_config_states_its_rows_published_numbers():
    for key, name, _ in experiments.ABLATIONS:
        text = (experiments.CONFIGS / "ablations" / f"{name}.toml").read_text()
        prec, iou = experiments.PAPER_TABLE4[key]
        assert f"): mPrec {prec}, mIoU {iou}." in text, name
        assert f"row {key}:" in text.splitlines()[0]


def test_row_nine_is_the_model_of_tables_one_and_two():
    assert config.load(experiments.CONFIGS / "ablations" / "09_rs.toml") == config.load(experiments.CONFIGS / "s3dis_area5.toml")
    switches = {key: config.load(experiments.CONFIGS / "ablations" / f"{name}.toml") for key, name, _ in experiments.ABLATIONS}
    described = {key: (c["model"]["backbone"], c["model"]["pcff"], c["model"]["instance_fusion"], c["model"]["semantic_fusion"],
                       c["data"]["sampling"], c["train"]["early_stopping_patience"] > 0 and c["data"]["validation_rooms"] > 0)
                 for key, c in switches.items()}
    assert len(set(described.values())) == 10  # ten different experiments
    assert described["1"][0] == "pointnet2" and all(described[k][0] == "pointconv" for k in described if k != "1")
    assert [k for k in described if described[k][4] == "resample"] == ["9", "10"]
    assert [k for k in described if described[k][5]] == ["8", "10"]


class _FakeTools:
    """Stands in for jsnet_tf.train and jsnet_tf.evaluate: records each command and leaves what the real
    ones would (config.toml; results.json with the settings the command passes)."""

    def __init__(self, runs):
        self.runs = {str(run.run_dir): run for run in runs}
        self.commands = []

    def __call__(self, command):
        self.commands.append(command)
        args = dict(zip(command, command[1:]))
        run = self.runs[str(pathlib.Path(args["--workdir"]) / f"area{args['--area']}")]
        if command[1:3] == ["-m", "jsnet_tf.train"]:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            (run.run_dir / "config.toml").write_text(config.to_toml(run.cfg))
        else:
            settings = dict(config.parse_override(a[len("--set="):])[1:] for a in command if a.startswith("--set=eval."))
            out = pathlib.Path(args["--out"])
            out.mkdir(parents=True, exist_ok=True)
            result = {"area": int(args["--area"]), "model_selection": {"which": args["--which"]}, "eval": settings,
                      **_metrics(mCov=1, mWCov=2, mRec=3, mPrec=4, oAcc=5, mAcc=6, mIoU=7, AP=8, AP50=9, AP25=10)}
            (out / "results.json").write_text(json.dumps(result))
        return 0


def test_finished_runs_are_reused_and_a_second_invocation_starts_no_subprocess(tmp_path, monkeypatch):
    workdir, data_dir = tmp_path / "work", _fake_data_dir(tmp_path, [5])
    runs = experiments.plan(experiments.table_spec("table4", ["8", "9"]), workdir, data_dir)
    tools = _FakeTools(runs)
    monkeypatch.setattr(experiments, "launch", tools)
    experiments.run_table("table4", workdir, data_dir, rows=["8", "9"])
    kinds = [(c[2], pathlib.Path(c[c.index("--workdir") + 1]).name, c[c.index("--which") + 1] if "--which" in c else None)
             for c in tools.commands]
    # Each run trained then evaluated; the ES row on its best (validation) checkpoint, the other on its last epoch.
    assert kinds == [("jsnet_tf.train", "08_full_es", None), ("jsnet_tf.evaluate", "08_full_es", "best"),
                     ("jsnet_tf.train", "jsnet", None), ("jsnet_tf.evaluate", "jsnet", "latest")]
    evaluate = tools.commands[1]
    assert "--set=eval.label_all_points=false" in evaluate  # the paper's protocol
    assert (workdir / "table4.md").exists()

    def no_subprocess(command):
        raise AssertionError(f"started {command}")

    monkeypatch.setattr(experiments, "launch", no_subprocess)
    markdown = experiments.run_table("table4", workdir, data_dir, rows=["8", "9"])
    assert "| 8 +ES | 1.0 | 2.0 | 3.0 | 4.0 (58.7) | 6.0 | 5.0 | 7.0 (54.4) | 8.0 | 9.0 | 10.0 |" in markdown
    # The tables sharing run 9 reuse it: Table 2's Area 5 row needs nothing new.
    table2 = experiments.run_table("table2", workdir, data_dir, rows=["area5"])
    assert "| Area 5: JSNet (ours) | 6.0 (61.4) | 5.0 (87.7) | 7.0 (54.5) |" in table2
    assert "| Area 5: 3P-RNN (paper) | (71.3) | (85.7) | (53.4) |" in table2  # mAcc oAcc mIoU, as the paper's Table 2

    # Other evaluation settings in the results: evaluated again, not trained from scratch (train.py resumes).
    result_path = experiments.results_path(runs[1], "original")
    stale = json.loads(result_path.read_text())
    stale["eval"]["bandwidth"] = 0.5
    result_path.write_text(json.dumps(stale))
    assert "partial" in experiments.dry_run(experiments.table_spec("table4", ["9"]), runs[1:], workdir, ("original",), with_costs=False)
    monkeypatch.setattr(experiments, "launch", tools)
    tools.commands.clear()
    experiments.run_table("table4", workdir, data_dir, rows=["8", "9"])
    assert [c[2] for c in tools.commands] == ["jsnet_tf.train", "jsnet_tf.evaluate"]
    assert json.loads(result_path.read_text())["eval"]["bandwidth"] == 0.6


def test_dry_run_lists_each_run_with_its_status(tmp_path):
    workdir = tmp_path / "work"
    spec = experiments.table_spec("table4", ["2", "3", "9"])
    runs = experiments.plan(spec, workdir, tmp_path / "data")
    _mark_done(runs[0], _metrics(mCov=1, mWCov=1, mRec=1, mPrec=1, oAcc=1, mAcc=1, mIoU=1))
    runs[1].run_dir.mkdir(parents=True)
    (runs[1].run_dir / "config.toml").write_text(config.to_toml(runs[1].cfg))  # trained in part
    (runs[1].run_dir / "metrics.json").write_text(json.dumps([{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]))
    listing = experiments.dry_run(spec, runs, workdir, ("original",), with_costs=False).splitlines()
    assert listing[1].startswith("  table4/02_backbone/area5  config ablations/02_backbone  area 5")
    assert [line.rsplit("status: ", 1)[1] for line in listing[1:4]] == ["done", "partial (3/100 epochs trained)", "to do"]
    assert not (workdir / "table4.md").exists()


def test_a_workdir_holding_a_run_of_another_config_is_refused_in_one_line(tmp_path):
    workdir, data_dir = tmp_path / "work", _fake_data_dir(tmp_path, [5])
    other = config.load(experiments.CONFIGS / "ablations" / "01_base_network.toml", [f'data.data_dir="{data_dir}"'])
    recorded = workdir / "table4" / "02_backbone" / "area5" / "config.toml"
    recorded.parent.mkdir(parents=True)
    recorded.write_text(config.to_toml(other))
    before = (recorded.read_bytes(), recorded.stat().st_mtime_ns)
    result = _cli("table4", "--rows", "2,9", "--data_dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"experiments: error: {recorded.parent} holds a run of another config "
                             "(model.backbone: 'pointnet2' -> 'pointconv'); nothing was changed: use another --workdir\n")
    assert (recorded.read_bytes(), recorded.stat().st_mtime_ns) == before
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")) == [
        "table4", "table4/02_backbone", "table4/02_backbone/area5", "table4/02_backbone/area5/config.toml"]


def test_unknown_table_or_row_is_one_line(tmp_path):
    result = _cli("table3", "--data_dir", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == "experiments: error: unknown table 'table3': choose one of table1, table2, table4, sixfold, scannet\n"
    with pytest.raises(experiments.ExperimentError, match=r"^table4 has no row 11 \(its rows: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\)$"):
        experiments.table_spec("table4", ["11"])


def test_help_explains_every_flag():
    result = _cli("--helpshort")
    for flag in ("--data_dir", "--workdir", "--quick", "--rows", "--dry_run", "--every_point",
                 "--seconds_per_step", "--blocks_per_second"):
        assert flag in result.stdout
    assert "Traceback" not in result.stderr


def test_quick_mode_generates_and_prepares_a_synthetic_set_where_there_is_none(tmp_path):
    from jsnet_tf import tasks

    s3dis = tasks.get("s3dis")
    data_dir = tmp_path / "data"
    assert s3dis.missing_data(data_dir, [1, 6])
    experiments.ensure_data(s3dis, data_dir, [1, 6], quick=True)
    assert s3dis.missing_data(data_dir, range(1, 7)) == []
    assert s3dis.prepared_num_points(data_dir, 5) == experiments.QUICK_POINTS
    rooms = sorted(p.stem for p in (data_dir / "rooms").glob("*.npz"))
    assert len(rooms) == 12 and rooms[:2] == ["Area_1_lounge_1", "Area_1_office_1"]  # two rooms an area: ES can hold one out
    with pytest.raises(experiments.ExperimentError, match="is not prepared for area 5 .*run jsnet-prepare-s3dis"):
        experiments.ensure_data(s3dis, tmp_path / "elsewhere", [5], quick=False)


@pytest.mark.slow
def test_quick_table4_of_two_rows_and_two_seeds_end_to_end(tmp_path):
    """`jsnet-experiments table4 --quick --rows 2,9 --seeds 2`: four runs trained and evaluated,
    the table of mean ± std with the paper's numbers beside."""
    from jsnet_tf.data import prepare_s3dis, synthetic

    # Smaller than quick's own set (one sparse room an area, areas 1-5): 5 training steps a row.
    started = time.time()
    synthetic.generate(tmp_path / "raw", seed=0, areas=5, rooms_per_area=1, points_per_m2=20)
    prepare_s3dis.prepare(tmp_path / "raw", tmp_path / "data", num_points=experiments.QUICK_POINTS, progress=False)
    command = [str(pathlib.Path(sys.executable).parent / "jsnet-experiments"), "table4", "--quick", "--rows", "2,9",
               "--seeds", "2", "--data_dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "work")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "work"
    markdown = (work / "table4.md").read_text()
    assert "quick run: not comparable" in markdown and "mean ± standard deviation over 2 seeds" in markdown
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in markdown.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert list(rows) == ["row", "2 backbone", "9 RS"]
    assert rows["row"][-3:] == ["AP*", "AP50*", "AP25* |"]
    for label, (prec, iou) in (("2 backbone", (55.9, 53.0)), ("9 RS", (62.1, 54.5))):
        cells = rows[label]
        assert " ± " in cells[0] and cells[3].endswith(f"({prec})") and cells[6].endswith(f"({iou})")
    data = json.loads((work / "table4.json").read_text())
    assert data["quick"] is True and data["seeds"] == 2
    assert [r["runs"] for r in data["rows"]] == [["table4/02_backbone/area5", "table4/02_backbone/seed1/area5"],
                                                 ["shared/jsnet/area5", "shared/jsnet/seed1/area5"]]
    for row in data["rows"]:
        ours = row["ours"]["original"]
        assert 0.0 <= ours["oAcc"] <= 100.0 and 0.0 <= ours["mIoU"] <= 100.0
        spread = row["spread"]["original"]["oAcc"]
        assert len(spread["seeds"]) == 2 and spread["min"] <= ours["oAcc"] <= spread["max"]
        assert ours["AP50"] is None or 0.0 <= ours["AP50"] <= 100.0
    for seed in (0, 1):
        folder = work / "table4" / "02_backbone" / (f"seed{seed}" if seed else "") / "area5"
        recorded = config.load(folder / "config.toml")
        assert recorded["data"]["sampling"] == "fixed" and recorded["model"]["pcff"] is False and recorded["train"]["epochs"] == 1
        assert recorded["train"]["seed"] == seed
        assert json.loads((folder / "eval_original" / "results.json").read_text())["eval"]["seed"] == seed
    assert markdown in result.stdout
    print(f"quick table4, two rows, two seeds: {time.time() - started:.0f} s")
