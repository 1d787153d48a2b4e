"""jsnet_tf.metrics: hand-computed rooms, the plain port of the original evaluator on random rooms
(arrays, txt files, 6-fold union), the txt writers and readers, and bad input."""

import io
import json

import numpy as np
import pytest

from jsnet_tf import metrics
from jsnet_tf.metrics import Evaluator, MetricsError
from tests import metrics_reference as reference

MEANS = ("oAcc", "mAcc", "mIoU", "mCov", "mWCov", "mPrec", "mRec")
PER_CLASS = ("acc", "iou", "cov", "wcov", "precision", "recall")
PRED_FORMAT = "%f %f %f %d %d %d %f %d %d\n"


def evaluate(rooms, num_classes=4):
    evaluator = Evaluator(num_classes)
    for room in rooms:
        evaluator.add_room(*(np.array(labels) for labels in room))
    return evaluator.result()


def values(result, key):
    """A per-class list of the result as floats, nan for None."""
    return np.array([np.nan if v is None else v for v in result["per_class"][key]])


def assert_values(result, key, expected):
    np.testing.assert_allclose(values(result, key), expected, rtol=1e-12, atol=0, equal_nan=True)


nan = np.nan


# ------------------------------------------------------------------------------- hand-built rooms


def test_perfect_prediction():
    """Every point and instance right (other instance ids); class 3 appears nowhere."""
    sem = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    ins = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    result = evaluate([(sem, ins, sem, [i + 10 for i in ins])])
    for key in MEANS:
        assert result[key] == 1
    for key in PER_CLASS:
        assert_values(result, key, [1, 1, 1, nan])
    assert result["counts"]["gt_instances"] == [1, 1, 2, 0]
    assert result["num_points"] == 9 and result["num_rooms"] == 1


def test_missed_instance():
    """Class 0 has instances of 4 and 2 points; the second is not predicted (ins -1)."""
    sem = [0] * 6 + [1, 1]
    ins_gt = [0, 0, 0, 0, 1, 1, 2, 2]
    ins_pred = [5, 5, 5, 5, -1, -1, 6, 6]
    result = evaluate([(sem, ins_gt, sem, ins_pred)])
    assert_values(result, "cov", [(1 + 0) / 2, 1, nan, nan])
    assert_values(result, "wcov", [(1 * 4 + 0 * 2) / 6, 1, nan, nan])
    assert_values(result, "precision", [1 / 1, 1, nan, nan])
    assert_values(result, "recall", [1 / 2, 1, nan, nan])
    assert result["mCov"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["mRec"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["oAcc"] == 1


def test_split_instance():
    """One instance of 6 points predicted as two of 4 and 2 points: IoUs 4/6 and 2/6."""
    sem = [1] * 6
    result = evaluate([(sem, [3] * 6, sem, [0, 0, 0, 0, 1, 1])])
    assert_values(result, "cov", [nan, 4 / 6, nan, nan])
    assert_values(result, "wcov", [nan, 4 / 6, nan, nan])
    assert_values(result, "precision", [nan, 1 / 2, nan, nan])
    assert_values(result, "recall", [nan, 1 / 1, nan, nan])


def test_exact_halves_both_count_as_in_the_original():
    """Two predictions of exactly half an instance each reach IoU 1/2: both are true positives,
    recall 2/1 (no one-to-one matching in the original)."""
    sem = [1] * 6
    rooms = [(sem, [3] * 6, sem, [0, 0, 0, 1, 1, 1])]
    result = evaluate(rooms)
    assert_values(result, "precision", [nan, 2 / 2, nan, nan])
    assert_values(result, "recall", [nan, 2 / 1, nan, nan])
    original = reference.evaluate_rooms([tuple(np.array(x) for x in rooms[0])], 4)
    assert original["recall"][1] == 2


def test_empty_and_predicted_only_classes():
    """Class 2 is predicted (points and one instance) but absent from the ground truth: IoU 0
    counts in mIoU, precision 0 in mPrec; acc, Cov, WCov and recall are undefined (None) and left
    out of the means. Class 3 appears nowhere: every value None."""
    sem_gt = [0, 0, 0, 0, 1, 1, 1, 1]
    ins_gt = [0, 0, 0, 0, 1, 1, 1, 1]
    sem_pred = [0, 0, 0, 0, 2, 2, 2, 1]
    ins_pred = [0, 0, 0, 0, 1, 1, 1, 2]
    result = evaluate([(sem_gt, ins_gt, sem_pred, ins_pred)])
    assert_values(result, "acc", [1, 1 / 4, nan, nan])
    assert_values(result, "iou", [1, 1 / 4, 0, nan])
    assert_values(result, "cov", [1, 1 / 4, nan, nan])
    assert_values(result, "wcov", [1, 1 / 4, nan, nan])
    assert_values(result, "precision", [1, 0, 0, nan])
    assert_values(result, "recall", [1, 0, nan, nan])
    assert result["per_class"]["acc"][3] is None
    assert result["mAcc"] == pytest.approx((1 + 1 / 4) / 2)
    assert result["mIoU"] == pytest.approx((1 + 1 / 4 + 0) / 3)
    assert result["mPrec"] == pytest.approx((1 + 0 + 0) / 3)
    assert result["mRec"] == pytest.approx((1 + 0) / 2)
    json.dumps(result, allow_nan=False)
    original = reference.evaluate_rooms([tuple(np.array(x) for x in
                                               (sem_gt, ins_gt, sem_pred, ins_pred))], 4)
    assert_matches_original(result, original)
    assert np.isnan(original["mAcc"]) and np.isnan(original["mIoU"])  # the original's nan means


def test_semantic_confusion():
    sem_gt = [0, 0, 0, 0, 1, 1, 2, 2]
    sem_pred = [0, 0, 1, 1, 1, 2, 2, 2]
    ins = [0] * 8
    result = evaluate([(sem_gt, ins, sem_pred, ins)], num_classes=3)
    assert result["oAcc"] == pytest.approx(5 / 8)
    assert_values(result, "acc", [2 / 4, 1 / 2, 2 / 2])
    assert_values(result, "iou", [2 / (4 + 2 - 2), 1 / (2 + 3 - 1), 2 / (2 + 3 - 2)])
    assert result["mAcc"] == pytest.approx(2 / 3)
    assert result["mIoU"] == pytest.approx(17 / 36)
    assert result["counts"]["confusion"] == [[2, 2, 0], [0, 1, 1], [0, 0, 2]]


def test_instance_class_is_the_mode_of_its_points():
    """A predicted instance takes the most frequent predicted class of its points (the lowest on a
    tie, as scipy.stats.mode): here class 1 for a prediction covering a class-0 instance, which
    therefore stays uncovered; a ground-truth instance split 2:2 between classes 2 and 3 is
    class 2."""
    sem_gt = [0, 0, 0, 0, 2, 2, 3, 3]
    ins_gt = [0, 0, 0, 0, 1, 1, 1, 1]
    sem_pred = [1, 1, 1, 0, 2, 2, 3, 3]
    ins_pred = [4, 4, 4, 4, 5, 5, 5, 5]
    result = evaluate([(sem_gt, ins_gt, sem_pred, ins_pred)])
    assert result["counts"]["gt_instances"] == [1, 0, 1, 0]
    assert result["counts"]["pred_instances"] == [0, 1, 1, 0]
    assert_values(result, "cov", [0, nan, 1, nan])
    assert_values(result, "precision", [nan, 0, 1, nan])
    original = reference.evaluate_rooms([tuple(np.array(x) for x in
                                               (sem_gt, ins_gt, sem_pred, ins_pred))], 4)
    assert_matches_original(result, original)


def test_minus_one_is_no_instance_only_in_predictions():
    """As the original: ins_pred -1 is no instance, but -2 is one; ins_gt -1 is an instance."""
    sem = [0] * 4
    result = evaluate([(sem, [-1, -1, 7, 7], sem, [-2, -2, -1, -1])])
    assert result["counts"]["gt_instances"][0] == 2
    assert result["counts"]["pred_instances"][0] == 1
    assert_values(result, "cov", [(1 + 0) / 2, nan, nan, nan])


def test_cov_is_the_mean_over_rooms_of_the_room_mean():
    """Room 1: one instance covered (IoU 1); room 2: three instances missed. The original averages
    per room: Cov = (1 + 0) / 2, not 1 / 4; WCov likewise; recall counts instances: 1 / 4."""
    sem = [0] * 6
    room1 = (sem, [0] * 6, sem, [0] * 6)
    room2 = (sem, [0, 0, 1, 1, 2, 2], sem, [-1] * 6)
    result = evaluate([room1, room2])
    assert_values(result, "cov", [1 / 2, nan, nan, nan])
    assert_values(result, "wcov", [1 / 2, nan, nan, nan])
    assert_values(result, "recall", [1 / 4, nan, nan, nan])
    assert result["counts"]["cov_rooms"][0] == 2


def test_no_rooms_gives_undefined_means():
    result = Evaluator().result()
    assert all(result[key] is None for key in MEANS)
    json.dumps(result, allow_nan=False)


def test_format_table():
    sem = [0, 0, 1, 1]
    ins = [0, 0, 1, 1]
    from jsnet_tf.data import s3dis

    result = evaluate([(sem, ins, sem, ins)], num_classes=13)
    assert result["class_names"] == [f"class_{c}" for c in range(13)]  # no dataset guessed from the class count
    table = metrics.format_table(result, s3dis.CLASSES)
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()}
    # the paper's six columns, then AP, AP50 and AP25 (not computed without instance tables)
    assert rows["ceiling"] == ["100.0"] * 6 + ["-"] * 3
    assert rows["floor"] == ["100.0"] * 6 + ["-"] * 3
    assert rows["clutter"] == ["-"] * 9
    assert rows["mean"] == ["100.0"] * 6 + ["-"] * 3
    assert "class_12" in metrics.format_table(result) and "clutter" not in metrics.format_table(result)


# ----------------------------------------------------------------- against the original's port


def random_rooms(rng, count, points=1500, instances=20, num_classes=13):
    return [reference.synthetic_room(rng, points, instances, num_classes) for _ in range(count)]


def assert_matches_original(result, original, expect_all_defined=False):
    for key in PER_CLASS:
        np.testing.assert_allclose(values(result, key), original[key], rtol=1e-12, atol=1e-15,
                                   equal_nan=True, err_msg=key)
    for key, per_class in (("mAcc", "acc"), ("mIoU", "iou"), ("mCov", "cov"), ("mWCov", "wcov"),
                           ("mPrec", "precision"), ("mRec", "recall")):
        defined = original[per_class][~np.isnan(original[per_class])]
        assert result[key] == pytest.approx(defined.mean(), rel=1e-12), key
        if expect_all_defined:
            assert result[key] == pytest.approx(original[key], rel=1e-12), key
    assert result["oAcc"] == pytest.approx(original["oAcc"], rel=1e-12)


@pytest.mark.parametrize("num_classes", [5, 13])
def test_accumulator_matches_original(rng, num_classes):
    """With 5 classes every value is defined, so the means are the original's own; with 13 some
    classes may lack instances, and the means are over the defined ones."""
    rooms = random_rooms(rng, 4, num_classes=num_classes)
    evaluator = Evaluator(num_classes)
    for room in rooms:
        evaluator.add_room(*room)
    result = evaluator.result()
    original = reference.evaluate_rooms(rooms, num_classes)
    assert_matches_original(result, original, expect_all_defined=num_classes == 5)
    assert 0 < result["mPrec"] < 1 and 0 < result["mRec"] < 1  # both sides of IoU 0.5 exercised


def test_sparse_ids_and_many_instances(rng, monkeypatch):
    """Ids spread over a huge range (renumbered with np.unique) and rooms with many instances
    (overlaps counted with np.unique instead of a dense table) give the same numbers."""
    rooms = random_rooms(rng, 3, points=3000, instances=300)
    expected = evaluate(rooms, 13)
    spread = [(s, i * 10**12 - 5, sp, np.where(ip == -1, -1, ip * 3**30)) for s, i, sp, ip in rooms]
    monkeypatch.setattr(metrics, "_DENSE_PAIRS_PER_POINT", 0)
    assert evaluate(spread, 13) == expected
    assert 0 < expected["mCov"] < 1


def write_area(rng, folder, rooms, area):
    """Writes the rooms' files and an output_filelist.txt (absolute paths); returns the list."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for r, (sem_gt, ins_gt, sem_pred, ins_pred) in enumerate(rooms):
        pred = folder / f"Area_{area}_office_{r + 1}_pred.txt"
        n = sem_gt.size
        metrics.write_room_outputs(pred, metrics.gt_path_for(pred), rng.uniform(-5, 20, (n, 3)),
                                   rng.uniform(0, 255, (n, 3)), rng.uniform(0, 1, n),
                                   sem_pred, ins_pred, sem_gt, ins_gt)
        listed.append(str(pred))
    filelist = folder / "output_filelist.txt"
    filelist.write_text("\n".join(listed) + "\n")
    return filelist


def test_filelist_matches_original(rng, tmp_path):
    rooms = random_rooms(rng, 3, num_classes=5)
    filelist = write_area(rng, tmp_path, rooms, 5)
    result = metrics.evaluate_filelist(filelist, num_classes=5)
    original = reference.evaluate_filelist(filelist, 5)
    assert_matches_original(result, original, expect_all_defined=True)
    assert result["num_rooms"] == 3


def test_six_fold_union_matches_original(rng, tmp_path):
    """Three areas: merging per-area evaluators (also after a JSON round trip of their results)
    and evaluating the three lists together both equal the original over the union of rooms."""
    areas = [random_rooms(rng, 2, num_classes=13) for _ in range(3)]
    lists = [write_area(rng, tmp_path / f"area{a}", rooms, a) for a, rooms in enumerate(areas)]
    union = [room for rooms in areas for room in rooms]
    original = reference.evaluate_rooms(union, 13)

    together = metrics.evaluate_filelist(lists)
    assert_matches_original(together, original)

    merged = Evaluator()
    for filelist in lists:
        area = Evaluator().add_filelist(filelist)
        merged.merge(Evaluator.from_result(json.loads(json.dumps(area.result()))))
    assert_matches_original(merged.result(), original)
    assert merged.result()["num_rooms"] == together["num_rooms"] == 6
    assert merged.result()["counts"]["confusion"] == together["counts"]["confusion"]


# -------------------------------------------------------------------------------- file formats


def original_lines(xyz, rgb, score, sem_pred, ins_pred, sem_gt, ins_gt):
    pred = "".join(PRED_FORMAT % (xyz[i, 0], xyz[i, 1], xyz[i, 2], rgb[i, 0], rgb[i, 1],
                                  rgb[i, 2], score[i], sem_pred[i], ins_pred[i])
                   for i in range(len(score)))
    gt = "".join("%d %d\n" % (sem_gt[i], ins_gt[i]) for i in range(len(score)))
    return pred, gt


def random_outputs(rng, n=3000, large=True):
    """Arguments of write_room_outputs. '%f' corner cases among xyz: exact ties at the 7th decimal
    (to even), negative zero and tiny negatives ('-0.000000'), values around a rounding boundary,
    and unless large=False values of 10 or more whole digits (read line by line)."""
    xyz = rng.uniform(-40, 40, (n, 3))
    specials = [0.0078125, -0.0078125, 1.5 / 64, -0.0, -1e-9, 4e-7, -4e-7, 2.5e-7, 2.5e-06,
                3.5e-06, 12.0000015, 0.9999995, 123456.0000005, 999999.9999996, 1 / 3,
                999999999.4999996]
    if large:
        specials += [5e9, -7.5e11]
    xyz.reshape(-1)[:len(specials)] = specials
    rgb = rng.uniform(0, 255.999, (n, 3))  # floats: '%d' truncates them
    score = rng.uniform(0, 1, n)
    return (xyz, rgb, score, rng.integers(0, 13, n), rng.integers(-1, 400, n),
            rng.integers(0, 13, n), rng.integers(0, 400, n))


def test_writer_is_byte_exact_with_the_original_formatting(rng, tmp_path):
    outputs = random_outputs(rng)
    pred, gt = tmp_path / "r_pred.txt", tmp_path / "r_gt.txt"
    metrics.write_room_outputs(pred, gt, *outputs)
    expected_pred, expected_gt = original_lines(*outputs)
    assert pred.read_text() == expected_pred
    assert gt.read_text() == expected_gt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_gt.txt", "r_pred.txt"]


def test_reader_matches_loadtxt(rng, tmp_path):
    """The vectorised parse gives np.loadtxt's values bit for bit."""
    outputs = random_outputs(rng, large=False)
    pred, gt = tmp_path / "r_pred.txt", tmp_path / "r_gt.txt"
    metrics.write_room_outputs(pred, gt, *outputs)
    read = metrics.read_room_outputs(pred)
    table, labels = np.loadtxt(pred), np.loadtxt(gt)
    np.testing.assert_array_equal(read.xyz, table[:, 0:3])
    np.testing.assert_array_equal(np.signbit(read.xyz), np.signbit(table[:, 0:3]))
    np.testing.assert_array_equal(read.rgb, table[:, 3:6].astype(np.int64))
    np.testing.assert_array_equal(read.score, table[:, 6])
    np.testing.assert_array_equal(read.sem_pred, table[:, 7])
    np.testing.assert_array_equal(read.ins_pred, table[:, 8])
    np.testing.assert_array_equal(read.sem_gt, labels[:, 0])
    np.testing.assert_array_equal(read.ins_gt, labels[:, 1])
    assert all(column.dtype == np.int64 for column in read[3:]) and read.rgb.dtype == np.int64


def test_written_files_take_the_vectorised_path(rng, tmp_path, monkeypatch):
    """Files in the writer's format never need the line-by-line parser (unless they hold '%f'
    values of more than 9 whole digits)."""
    outputs = random_outputs(rng, large=False)
    pred, gt = tmp_path / "r_pred.txt", tmp_path / "r_gt.txt"
    metrics.write_room_outputs(pred, gt, *outputs)
    monkeypatch.setattr(metrics, "_parse_lines", None)
    metrics.read_room_outputs(pred, gt)
    Evaluator().add_room_files(pred, gt)


def test_reader_accepts_other_layouts(rng, tmp_path):
    """Tabs, CRLF, blank lines, exponents, integral floats and no final newline (the line-by-line
    path) read the same values."""
    outputs = random_outputs(rng, 50)
    pred, gt = tmp_path / "r_pred.txt", tmp_path / "r_gt.txt"
    metrics.write_room_outputs(pred, gt, *outputs)
    canonical = metrics.read_room_outputs(pred)
    text = pred.read_text().splitlines()
    odd = [line.replace(" ", "\t", 1) for line in text]
    odd[3] = " ".join("%.17e" % float(v) for v in text[3].split())
    pred.write_bytes(("\r\n\r\n".join(odd)).encode())
    gt.write_text("\n\n".join(" ".join(f"{int(v)}.0" for v in line.split())
                              for line in gt.read_text().splitlines()))
    read = metrics.read_room_outputs(pred)
    for got, want in zip(read, canonical):
        np.testing.assert_array_equal(got, want)


def test_file_evaluation_reads_relative_paths_against_the_list_folder(rng, tmp_path, monkeypatch):
    rooms = random_rooms(rng, 2, points=300, instances=5)
    write_area(rng, tmp_path / "area", rooms, 1)
    (tmp_path / "area" / "output_filelist.txt").write_text(
        "Area_1_office_1_pred.txt\n\n  Area_1_office_2_pred.txt  \n")
    expected = evaluate(rooms, 13)
    assert metrics.evaluate_filelist(tmp_path / "area" / "output_filelist.txt") == expected
    (tmp_path / "list.txt").write_text(
        "area/Area_1_office_1_pred.txt\narea/Area_1_office_2_pred.txt")
    monkeypatch.chdir(tmp_path / "area")
    assert metrics.evaluate_filelist(tmp_path / "list.txt") == expected
    assert metrics.evaluate_filelist("../list.txt", base_dir=tmp_path) == expected


def test_gt_path_replaces_the_suffix():
    """The original's rstrip of the characters of '_pred.txt' would make 'Area_5_storag_gt.txt'."""
    assert metrics.gt_path_for("a/Area_5_storage_pred.txt").name == "Area_5_storage_gt.txt"
    with pytest.raises(MetricsError, match="must end in _pred.txt"):
        metrics.gt_path_for("a/room.txt")


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture
def room_files(rng, tmp_path):
    pred, gt = tmp_path / "Area_1_office_1_pred.txt", tmp_path / "Area_1_office_1_gt.txt"
    metrics.write_room_outputs(pred, gt, *random_outputs(rng, 20))
    return pred, gt


def replace_line(path, number, line):
    lines = path.read_text().splitlines()
    lines[number - 1] = line
    path.write_text("\n".join(lines) + "\n")


def test_missing_files(room_files):
    pred, gt = room_files
    gt.unlink()
    with pytest.raises(MetricsError, match=f"{gt}: cannot read"):
        Evaluator().add_room_files(pred)
    with pytest.raises(MetricsError, match="cannot read"):
        metrics.read_room_outputs(pred.with_name("x_pred.txt"))
    with pytest.raises(MetricsError, match="cannot read the file list"):
        metrics.evaluate_filelist(pred.with_name("missing.txt"))


def test_different_lengths(room_files):
    pred, gt = room_files
    gt.write_text("".join(gt.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(MetricsError, match=f"{pred} has 20 points but {gt} has 19"):
        Evaluator().add_room_files(pred)
    with pytest.raises(MetricsError, match="has 20 points but"):
        metrics.read_room_outputs(pred)


@pytest.mark.parametrize("line, problem", [
    ("1.0 2.0 3.0 4 5 6 0.5 7", r":5: expected 9 numbers \(x y z r g b score sem ins\), found 8"),
    ("1.0 2.0 3.0 4 5 6 0.5 7 8 9", ":5: expected 9 numbers"),
    ("1.0 2.0 abc 4 5 6 0.5 7 8", ":5: not a number"),
    ("1.0 2.0 3.0 4 5 6 0.5 7.5 8", ":5: sem is not an integer"),
    ("1.0 2.0 nan 4 5 6 0.5 7 8", ":5: z is not finite"),
])
def test_malformed_pred_line(room_files, line, problem):
    pred, _ = room_files
    replace_line(pred, 5, line)
    with pytest.raises(MetricsError, match=f"{pred}{problem}"):
        Evaluator().add_room_files(pred)
    with pytest.raises(MetricsError, match=f"{pred}{problem}"):
        metrics.read_room_outputs(pred)


def test_malformed_gt_line_and_empty_file(room_files):
    pred, gt = room_files
    replace_line(gt, 2, "3")
    with pytest.raises(MetricsError, match=rf"{gt}:2: expected 2 numbers \(sem ins\), found 1"):
        Evaluator().add_room_files(pred)
    gt.write_text("\n \n")
    with pytest.raises(MetricsError, match=f"{gt}: no points"):
        Evaluator().add_room_files(pred)


@pytest.mark.parametrize("which, line, label", [("pred", "1.0 2.0 3.0 4 5 6 0.5 13 8", 13),
                                                ("gt", "-1 4", -1)])
def test_labels_out_of_range_in_files(room_files, which, line, label):
    pred, gt = room_files
    path = pred if which == "pred" else gt
    replace_line(path, 7, line)
    with pytest.raises(MetricsError, match=rf"{path}: sem {label} on data line 7 is outside the "
                                           r"classes 0..12"):
        Evaluator().add_room_files(pred)


def test_bad_arrays():
    good = np.zeros(4, np.int64)
    with pytest.raises(MetricsError, match="room: ins_pred has 3 points, expected 4"):
        Evaluator().add_room(good, good, good, good[:3])
    with pytest.raises(MetricsError, match="sem_pred 4 at point 2 is outside the classes 0..3"):
        Evaluator(4).add_room(good, good, [0, 0, 4, 0], good)
    with pytest.raises(MetricsError, match="ins_gt holds 0.5 at point 1, not an integer"):
        Evaluator().add_room(good, [0, 0.5, 0, 0], good, good)
    with pytest.raises(MetricsError, match="sem_gt must hold integer labels"):
        Evaluator().add_room(good.astype(bool), good, good, good)
    with pytest.raises(MetricsError, match=r"merge an evaluator of 4 classes \(instance classes \[0, 1, 2, 3\], ignored label "
                                           r"None\) into one of 13"):
        Evaluator().merge(Evaluator(4))
    with pytest.raises(MetricsError, match="ignored label -1"):
        Evaluator(4).merge(Evaluator(4, ignore_label=-1))
    with pytest.raises(MetricsError, match="not an evaluation result"):
        Evaluator.from_result({"class_names": ["a"]})


def test_ignored_points_and_classes_without_instances_are_left_out():
    """ScanNet: points of class -1 leave every metric, ins_gt -1 is no instance, and only the
    instance classes (here 1 and 2; class 0 stands for a wall) have instance metrics."""
    sem_gt = np.array([-1, -1, 0, 0, 1, 1, 1, 2, 2])
    ins_gt = np.array([-1, -1, -1, -1, 5, 5, 5, 7, 7])
    sem_pred = np.array([1, 2, 0, 0, 1, 1, 1, 2, 2])
    ins_pred = np.array([3, 3, 0, 0, 1, 1, 1, 2, 2])
    result = Evaluator(3, instance_classes=[1, 2], ignore_label=-1).add_room(sem_gt, ins_gt, sem_pred, ins_pred).result()
    assert result["num_points"] == 7 and result["oAcc"] == 1.0 and result["mIoU"] == 1.0
    assert result["per_class"]["cov"] == [None, 1.0, 1.0] and result["per_class"]["precision"] == [None, 1.0, 1.0]
    assert result["mPrec"] == result["mRec"] == result["mCov"] == 1.0
    # Without the ignored label the unannotated points count (and class -1 is refused).
    with pytest.raises(MetricsError, match="sem_gt -1 at point 0 is outside the classes 0..2"):
        Evaluator(3).add_room(sem_gt, ins_gt, sem_pred, ins_pred)


def test_bad_file_lists(tmp_path):
    filelist = tmp_path / "output_filelist.txt"
    filelist.write_text("\n\n")
    with pytest.raises(MetricsError, match="lists no rooms"):
        metrics.evaluate_filelist(filelist)
    filelist.write_text("a_pred.txt\nb.txt\n")
    with pytest.raises(MetricsError,
                       match=r"output_filelist.txt:2: 'b.txt' does not end in _pred.txt"):
        metrics.evaluate_filelist(filelist)


def test_writer_rejects_bad_input_and_keeps_the_old_file(rng, tmp_path):
    outputs = list(random_outputs(rng, 10))
    pred, gt = tmp_path / "r_pred.txt", tmp_path / "r_gt.txt"
    metrics.write_room_outputs(pred, gt, *outputs)
    before = pred.read_bytes()
    bad = list(outputs)
    bad[2] = outputs[2][:9]
    with pytest.raises(MetricsError, match=r"score must have shape \(10,\), got \(9,\)"):
        metrics.write_room_outputs(pred, gt, *bad)
    bad = list(outputs)
    bad[0] = outputs[0].copy()
    bad[0][3, 1] = np.inf
    with pytest.raises(MetricsError, match="xyz must be finite"):
        metrics.write_room_outputs(pred, gt, *bad)
    assert pred.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_gt.txt", "r_pred.txt"]


def savetxt_bytes(columns, formats):
    """np.savetxt's lines of the columns (a structured array: each column keeps its dtype)."""
    dtype = [(f"c{i}", np.asarray(c).dtype) for i, c in enumerate(columns)]
    table = np.empty(len(columns[0]), dtype)
    for i, column in enumerate(columns):
        table[f"c{i}"] = column
    out = io.BytesIO()
    np.savetxt(out, table, fmt=[f"%{kind}" for kind in formats])
    return out.getvalue()


# '%f' corner cases: non-finite, beyond float32 and int64, tiny and subnormal, signed zeros, values
# that round at the 6th decimal (5e-7 and 2.5e-7 lie just below their ties, 0.0078125 and 1.5 / 64
# are exact ties, to even), float64 neighbours of the vectorised range's end (2**52 / 1e6), large
# integers.
ADVERSARIAL = [np.nan, -np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -3.4028234663852886e38, 1e308,
               -1.7976931348623157e308, 1e-30, -1e-30, 5e-324, -2.2250738585072014e-308, 0.0, -0.0,
               5e-7, -5e-7, 0.0000005, 2.5e-7, -2.5e-7, 1.5e-6, 2.5e-6, -3.5e-6, 0.0078125,
               -1.5 / 64,
               0.9999995, -999999.9999995, 12.0000015, 1 / 3, 4503599627.370495, 4503599627.370496,
               -4503599627.3704967, 4503599627.370497, 2.0**53, 2.0**53 + 2, -123456789012345.0,
               9.2e12, 9.3e18, 1e22]


def test_format_lines_matches_savetxt_on_adversarial_values(rng):
    floats = np.array(ADVERSARIAL)
    ints = rng.integers(-10**6, 10**6, floats.size)
    expected = savetxt_bytes([floats, ints, floats[::-1]], "fdf")
    assert metrics.format_lines([floats, ints, floats[::-1]], "fdf") == expected
    assert expected.startswith(b"nan ") and b"\n1000000000000000019884624838656.000000 " in expected
    for value in ADVERSARIAL:  # each alone, and among ordinary rows
        column = np.concatenate([rng.uniform(-40, 40, 3), [value], rng.uniform(-40, 40, 3)])
        assert metrics.format_lines([column], "f") == savetxt_bytes([column], "f"), value


def test_format_lines_matches_savetxt_at_every_magnitude(rng):
    """Random values of 1e-12 to 1e40, float32 values (of which many at large magnitudes are
    exact ties at the 7th decimal), values whose float64 product with 1e6 is a half-integer that
    the exact product is not, and int64 '%d' values up to its extremes."""
    size = 20_000
    magnitudes = 10.0 ** rng.uniform(-12, 40, size) * rng.choice([-1.0, 1.0], size)
    float32 = (rng.uniform(-1, 1, size) * 10.0 ** rng.integers(-3, 12, size)).astype(np.float32)
    near_halves = (rng.integers(-10**12, 10**12, size) + 0.5) / 1e6
    ints = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size, endpoint=True)
    ints[:3] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]
    rng.shuffle(ints)
    columns = [magnitudes, float32.astype(np.float64), ints, near_halves,
               rng.uniform(-1e4, 1e4, size)]
    assert metrics.format_lines(columns, "ffdff") == savetxt_bytes(columns, "ffdff")
    assert ((near_halves * 1e6) % 1 == 0.5).mean() > 0.9  # most take the exact tie-breaking path


def test_format_lines_integer_columns_of_every_type(rng):
    """'%d' of floats truncates (as Python's '%d'), uint64 beyond int64 and bools are written."""
    floats = np.array([2.7, -2.7, -0.5, 1e30, -9.3e18, 4503599627.9])
    unsigned = np.array([0, 2**63, 2**64 - 1, 7, 2**63 - 1, 1], np.uint64)
    flags = np.array([True, False] * 3)
    small = np.arange(6, dtype=np.int8) - 3
    columns = [floats, unsigned, flags, small]
    assert metrics.format_lines(columns, "dddd") == savetxt_bytes(columns, "dddd")


def test_format_lines_refuses_what_it_cannot_write():
    floats = np.zeros(3)
    with pytest.raises(ValueError, match="one format"):
        metrics.format_lines([floats], "fd")
    with pytest.raises(ValueError, match="one format"):
        metrics.format_lines([floats], "s")
    with pytest.raises(ValueError, match="cannot hold NaN"):
        metrics.format_lines([np.array([1.0, np.nan])], "d")
    with pytest.raises(ValueError, match="of one length"):
        metrics.format_lines([floats, floats[:2]], "ff")
    assert metrics.format_lines([floats[:0]], "f") == b""
