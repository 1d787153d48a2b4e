"""Built-in synthetic ScanNet v2, written in the release's layout and file formats.

    python -m jsnet_tf.data.synthetic_scannet --out DIR [--seed 0] [--scenes 8,3,1]
        [--points_per_m2 500] [--overwrite]

writes what the download and the ScanNet repository hold:

    DIR/scans/<scene>/<scene>_vh_clean_2.ply                 binary little-endian PLY: vertices
                                                             x y z (float), red green blue alpha
                                                             (uchar); faces (list uchar int
                                                             vertex_indices, triangles)
    DIR/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  sceneId, params, segIndices
    DIR/scans/<scene>/<scene>.aggregation.json               sceneId, appId, segGroups (id,
                                                             objectId, segments, label),
                                                             segmentsFile
    DIR/scans_test/<scene>/<scene>_vh_clean_2.ply            test scenes: the mesh only
    DIR/scannetv2-labels.combined.tsv                        the real table's rows (all its
                                                             columns) of the raw categories used
    DIR/splits/scannetv2_{train,val,test}.txt                the split lists

so `jsnet-prepare-scannet --raw DIR --out OUT --split_dir DIR/splits` prepares it. The default
size suits a demo on 2 cores: 8 train, 3 val and 1 test scenes of 3.5-6 m rooms, 30,000-50,000
vertices each (at seed 0: 441,210 vertices; 772 stride-0.5 blocks of the train scenes hold 100
labelled points or more).

A scene is a room of the synthetic S3DIS (`jsnet_tf.data.synthetic.make_room`: an office,
conference room, lounge or storage room), turned about z by a random angle and moved (ScanNet's
meshes are not axis-aligned), with its points in a random order. Its classes become raw
categories of the label table:

    S3DIS class  raw category                           nyu40 id  benchmark class
    wall         wall                                   1         wall
    floor        floor                                  2         floor
    ceiling      ceiling                                22        ignored
    beam         (no object: unannotated)               0         ignored
    column       column                                 38        ignored
    window       window                                 9         window
    door         door                                   8         door
    table        desk in offices, table elsewhere       14 / 7    desk / table
    chair        office chair in offices, chair         5         chair
    sofa         couch                                  6         sofa
    bookcase     bookshelf                              10        bookshelf
    board        whiteboard                             30        ignored
    clutter      box and trash can, in turns            29 / 39   ignored / otherfurniture

Each object's points are cut into segments (the 0.5 m cells of a grid they fall in: segments
follow objects, as the release's over-segmentation mostly does); segment ids are sparse
integers. About 4% of the segments belong to no object, as surfaces no annotator labelled.
Faces: a Delaunay triangulation of each segment in its best-fitting plane. Two quirks of the
release are reproduced: the first val scene lists its objects twice (scene0217_00's: the repeats
numbered on from the last objectId), and in the first train scene a segment of some objects is
also named by the object listed after it.

Deterministic: a scene depends only on the seed and its index. Each scene is written into a
hidden folder and renamed into place when complete; existing scenes are skipped (an interrupted
run resumes) unless `--overwrite`. The label table and split lists are written atomically.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from absl import app, flags

from jsnet_tf.data import scannet, synthetic
from jsnet_tf.files import write_text_atomic

DEFAULT_SCENES = (8, 3, 1)  # train, val, test
DEFAULT_POINTS_PER_M2 = 500.0
ROOM_KINDS = ("office", "conferenceRoom", "lounge", "storage")
_KIND_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
SEGMENT_CELL = 0.5        # metres
UNANNOTATED_SEGMENTS = 0.04
SPLITS_DIR = "splits"
_TMP_DIR = ".synthetic_tmp"

# S3DIS class -> raw category (None: no object); tables and chairs depend on the room.
RAW_CATEGORY = {"wall": "wall", "floor": "floor", "ceiling": "ceiling", "beam": None,
                "column": "column", "window": "window", "door": "door", "sofa": "couch",
                "bookcase": "bookshelf", "board": "whiteboard"}
OFFICE_CATEGORY = {"table": "desk", "chair": "office chair"}
OTHER_CATEGORY = {"table": "table", "chair": "chair"}
CLUTTER_CATEGORIES = ("box", "trash can")

# The rows of the release's scannetv2-labels.combined.tsv for the raw categories above.
LABEL_TABLE_HEADER = ("id", "raw_category", "category", "count", "nyu40id", "eigen13id",
                      "nyuClass", "nyu40class", "eigen13class", "ModelNet40", "ModelNet10",
                      "ShapeNetCore55", "synsetoffset", "wnsynsetid", "wnsynsetkey", "mpcat40",
                      "mpcat40index")
LABEL_TABLE_ROWS = (
    ("1", "wall", "wall", "8277", "1", "12", "wall", "wall", "Wall", "", "", "", "",
     "n04546855", "wall.n.01", "wall", "1"),
    ("2", "chair", "chair", "4646", "5", "4", "chair", "chair", "Chair", "chair", "chair",
     "chair", "3001627", "n03001627", "chair.n.01", "chair", "3"),
    ("3", "floor", "floor", "1553", "2", "5", "floor", "floor", "Floor", "", "", "", "",
     "n03365592", "floor.n.01", "floor", "2"),
    ("5", "door", "door", "1483", "8", "12", "door", "door", "Wall", "door", "", "", "",
     "n03221720", "door.n.01", "door", "4"),
    ("16", "window", "window", "1209", "9", "13", "window", "window", "Window", "", "", "", "",
     "n04587648", "window.n.01", "window", "9"),
    ("4", "table", "table", "1170", "7", "10", "table", "table", "Table", "table", "table",
     "table", "4379243", "n04379243", "table.n.02", "table", "5"),
    ("56", "trash can", "trash can", "1090", "39", "6", "garbage bin", "otherfurniture",
     "Furniture", "", "", "trash_bin", "2747177", "n02747177", "ashcan.n.01", "objects", "39"),
    ("41", "ceiling", "ceiling", "806", "22", "3", "ceiling", "ceiling", "Ceiling", "", "", "",
     "", "n02990373", "ceiling.n.01", "ceiling", "17"),
    ("26", "box", "box", "775", "29", "7", "box", "box", "Objects", "", "", "", "",
     "n02883344", "box.n.01", "objects", "39"),
    ("9", "desk", "desk", "680", "14", "10", "desk", "desk", "Table", "desk", "desk", "table",
     "4379243", "n03179701", "desk.n.01", "table", "5"),
    ("10", "office chair", "office chair", "595", "5", "4", "chair", "chair", "Chair", "chair",
     "chair", "chair", "3001627", "n04373704", "swivel_chair.n.01", "chair", "3"),
    ("6", "couch", "couch", "502", "6", "9", "sofa", "sofa", "Sofa", "sofa", "sofa", "sofa",
     "4256520", "n04256520", "sofa.n.01", "sofa", "10"),
    ("18", "bookshelf", "bookshelf", "360", "10", "6", "bookshelf", "bookshelf", "Furniture",
     "bookshelf", "", "bookshelf", "2871439", "n02871439", "bookshelf.n.01", "shelving", "31"),
    ("52", "whiteboard", "whiteboard", "327", "30", "7", "whiteboard", "whiteboard", "Objects",
     "", "", "", "", "n03211616", "display_panel.n.01", "board_panel", "35"),
    ("120", "column", "column", "26", "38", "7", "column", "otherstructure", "Objects", "", "",
     "", "", "n03074380", "column.n.06", "column", "24"),
)


class Scan(NamedTuple):
    """One synthetic scan, in the release's terms."""

    name: str
    xyz: np.ndarray       # (N, 3) float32, the release's frame
    rgb: np.ndarray       # (N, 3) uint8
    faces: np.ndarray     # (F, 3) int32 vertex indices
    segments: np.ndarray  # (N,) int64: segIndices
    seg_groups: list      # the aggregation's segGroups (dicts), in order


def scene_names(scenes: tuple[int, int, int]) -> dict[str, list[str]]:
    """{split: names}: scene0000_00, scene0001_00, ... numbered on through train, val, test."""
    names, index = {}, 0
    for split, count in zip(scannet.SPLITS, scenes):
        names[split] = [f"scene{index + i:04d}_00" for i in range(count)]
        index += count
    return names


def _raw_categories(semantic: np.ndarray, instance: np.ndarray, office: bool) -> list[str | None]:
    """The raw category of each instance 0..K-1 of a room (see the module docstring)."""
    first = np.unique(instance, return_index=True)[1]
    categories, clutter = [], 0
    for cls in semantic[first]:
        if cls == "clutter":
            categories.append(CLUTTER_CATEGORIES[clutter % len(CLUTTER_CATEGORIES)])
            clutter += 1
        else:
            categories.append({**RAW_CATEGORY, **(OFFICE_CATEGORY if office
                                                  else OTHER_CATEGORY)}[str(cls)])
    return categories


def _segments(xyz: np.ndarray, instance: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(segment index 0..S-1 per point: the SEGMENT_CELL cells of each instance, the sparse
    segment id of each index)."""
    cells = np.floor(xyz / SEGMENT_CELL).astype(np.int64)
    cells -= cells.min(axis=0)
    key = instance.astype(np.int64)
    for axis, span in enumerate(cells.max(axis=0) + 1):
        key = key * span + cells[:, axis]
    _, index = np.unique(key, return_inverse=True)
    index = index.reshape(-1)
    count = int(index.max()) + 1
    ids = np.sort(rng.choice(20 * count, count, replace=False)).astype(np.int64)
    return index, ids


def _triangulate(xyz: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """(F, 3) int32 faces: each segment's points triangulated (Delaunay) in its best plane."""
    from scipy.spatial import Delaunay

    order = np.argsort(segment, kind="stable")
    bounds = np.flatnonzero(np.diff(segment[order])) + 1
    faces = []
    for members in np.split(order, bounds):
        if len(members) < 4:  # qhull needs 4 points; 3 make one triangle, fewer none
            faces.extend([members[None]] if len(members) == 3 else [])
            continue
        points = xyz[members].astype(np.float64)
        centred = points - points.mean(axis=0)
        axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
        triangles = Delaunay(centred @ axes.T, qhull_options="QJ").simplices
        faces.append(members[triangles])
    return np.concatenate(faces).astype(np.int32) if faces else np.zeros((0, 3), np.int32)


def make_scan(seed: int, index: int, name: str, points_per_m2: float = DEFAULT_POINTS_PER_M2,
              repeat_objects: bool = False, share_segments: bool = False) -> Scan:
    """Builds scan `index` (see the module docstring); `repeat_objects` and `share_segments`
    add the two quirks."""
    rng = np.random.default_rng([seed, index, 2])
    kind = str(rng.choice(ROOM_KINDS, p=_KIND_WEIGHTS))
    size = (rng.uniform(3.5, 6.0), rng.uniform(3.0, 5.0), rng.uniform(2.5, 3.0))
    room = synthetic.make_room(rng, f"{kind}_1", points_per_m2, size=size)
    categories = _raw_categories(room.semantic, room.instance, office=kind == "office")
    segment, segment_ids = _segments(room.xyz, room.instance, rng)
    num_segments = len(segment_ids)
    annotated = rng.random(num_segments) >= UNANNOTATED_SEGMENTS

    seg_groups = []
    segment_instance = np.zeros(num_segments, np.int64)
    segment_instance[segment] = room.instance
    for k, category in enumerate(categories):
        members = np.flatnonzero((segment_instance == k) & annotated)
        if category is None or not len(members):
            continue
        seg_groups.append({"id": len(seg_groups), "objectId": len(seg_groups),
                           "segments": segment_ids[members].tolist(), "label": category})
    if share_segments:  # each third object also names a segment of the object before it
        for before, after in zip(seg_groups[1::3], seg_groups[2::3]):
            after["segments"] = sorted(after["segments"] + [before["segments"][0]])
    if repeat_objects:
        n = len(seg_groups)
        seg_groups = seg_groups + [{**g, "id": n + g["id"], "objectId": n + g["objectId"]}
                                   for g in seg_groups]

    angle = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    shift = np.array([rng.uniform(0.0, 4.0), rng.uniform(0.0, 4.0), rng.uniform(-0.05, 0.05)])
    xyz = (room.xyz @ turn.T + shift).astype(np.float32)
    order = rng.permutation(len(xyz))  # the release's vertex order follows no object
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    faces = position[_triangulate(room.xyz, segment)].astype(np.int32)
    return Scan(name, xyz[order], room.rgb[order], faces, segment_ids[segment[order]],
                seg_groups)


def write_scan(scan: Scan, scene_dir: str | Path, labelled: bool = True) -> None:
    """Writes the scan's mesh (and, when `labelled`, its segments and aggregation files)."""
    import plyfile

    scene_dir = Path(scene_dir)
    scene_dir.mkdir(parents=True, exist_ok=True)
    files = scannet.scene_files(scene_dir, scan.name)
    vertex = np.empty(len(scan.xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                                            ("alpha", "u1")])
    for k, key in enumerate("xyz"):
        vertex[key] = scan.xyz[:, k]
    for k, key in enumerate(("red", "green", "blue")):
        vertex[key] = scan.rgb[:, k]
    vertex["alpha"] = 255
    face = np.empty(len(scan.faces), dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = scan.faces
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"),
                     plyfile.PlyElement.describe(face, "face",
                                                 len_types={"vertex_indices": "u1"},
                                                 val_types={"vertex_indices": "i4"})],
                    text=False, byte_order="<",
                    comments=["jsnet-tf synthetic ScanNet"]).write(str(files["mesh"]))
    if not labelled:
        return
    files["segments"].write_text(json.dumps({
        "params": {"cellSize": str(SEGMENT_CELL)}, "sceneId": scan.name,
        "segIndices": scan.segments.tolist()}))
    files["aggregation"].write_text(json.dumps({
        "sceneId": f"scannet.{scan.name}", "appId": "Aggregator.v2",
        "segGroups": scan.seg_groups,
        "segmentsFile": f"scannet.{scan.name}{scannet.SEGMENTS_SUFFIX}"}, indent=1))


def label_table_text() -> str:
    return "".join("\t".join(row) + "\n" for row in (LABEL_TABLE_HEADER, *LABEL_TABLE_ROWS))


def generate(out_dir: str | Path, seed: int = 0, scenes: tuple[int, int, int] = DEFAULT_SCENES,
             points_per_m2: float = DEFAULT_POINTS_PER_M2, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Writes a synthetic ScanNet under `out_dir` (see the module docstring); existing scenes
    are kept unless `overwrite`.

    Returns a summary dict: scenes (all), written, skipped, vertices (in the scenes written),
    seconds, out.
    """
    from tqdm import tqdm

    start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = out_dir / _TMP_DIR
    shutil.rmtree(tmp_root, ignore_errors=True)  # left by an interrupted run
    names = scene_names(scenes)
    plan = [(split, name) for split in scannet.SPLITS for name in names[split]]
    written = skipped = vertices = 0
    for index, (split, name) in enumerate(tqdm(plan, desc="synthetic ScanNet", unit="scene",
                                               disable=not progress, file=sys.stderr)):
        labelled = split in scannet.LABELLED_SPLITS
        final = out_dir / ("scans" if labelled else "scans_test") / name
        if final.is_dir() and not overwrite:
            skipped += 1
            continue
        scan = make_scan(seed, index, name, points_per_m2,
                         repeat_objects=split == "val" and name == names["val"][0],
                         share_segments=split == "train" and name == names["train"][0])
        tmp = tmp_root / name
        write_scan(scan, tmp, labelled)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            shutil.rmtree(final)
        tmp.replace(final)
        written += 1
        vertices += len(scan.xyz)
    shutil.rmtree(tmp_root, ignore_errors=True)
    write_text_atomic(out_dir / scannet.LABEL_MAP_FILE, label_table_text())
    for split in scannet.SPLITS:
        write_text_atomic(out_dir / SPLITS_DIR / scannet.SPLIT_FILE.format(split),
                          "".join(f"{name}\n" for name in names[split]))
    return {"scenes": len(plan), "written": written, "skipped": skipped, "vertices": vertices,
            "seconds": time.time() - start, "out": str(out_dir)}


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program."""
    flags.DEFINE_string("out", None, "Output folder: scans/, scans_test/, the label table and "
                        "splits/ (the split lists) are written inside it.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed and sizes give the same files.",
                         lower_bound=0)
    flags.DEFINE_list("scenes", [str(n) for n in DEFAULT_SCENES],
                      "Scenes in the train, val and test splits, e.g. 8,3,1.")
    flags.DEFINE_float("points_per_m2", DEFAULT_POINTS_PER_M2,
                       "Surface sampling density (points per square metre) next to a scanner; "
                       "it falls off with distance.", lower_bound=1.0)
    flags.DEFINE_bool("overwrite", False, "Regenerate scenes that already exist (by default "
                      "they are skipped, so an interrupted run can be resumed).")
    flags.DEFINE_bool("progress", True, "Show a progress bar over the scenes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    try:
        scenes = tuple(int(n) for n in FLAGS.scenes)
    except ValueError:
        scenes = ()
    if len(scenes) != 3 or min(scenes) < 0:
        raise app.UsageError(f"--scenes must be 3 integers >= 0 (train, val, test), got "
                             f"{','.join(FLAGS.scenes)}")
    try:
        s = generate(FLAGS.out, FLAGS.seed, scenes, FLAGS.points_per_m2, FLAGS.overwrite,
                     FLAGS.progress)
    except OSError as e:
        sys.exit(f"synthetic_scannet: error: {e}")
    print(f"{s['scenes']} scenes ({s['written']} written, {s['skipped']} already there; train "
          f"{scenes[0]}, val {scenes[1]}, test {scenes[2]}), {s['vertices']} vertices written, "
          f"{s['seconds']:.1f} s -> {s['out']}; prepare with --split_dir "
          f"{Path(s['out']) / SPLITS_DIR}")


def cli():
    """The `jsnet-synthetic-scannet` console script (also `python -m jsnet_tf.data.synthetic_scannet`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
