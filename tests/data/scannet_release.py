"""Writers of ScanNet v2 release files for the tests, independent of jsnet_tf: a binary PLY mesh
through plyfile, the segments and aggregation JSON, the label table and split lists."""

import json
from pathlib import Path

import numpy as np
import plyfile

# The header and some rows of the release's scannetv2-labels.combined.tsv, as they are (`furnace`
# has empty trailing columns; the category of `wardrobe cabinet` ends in a blank).
TABLE_HEADER = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\t"
                "eigen13class\tModelNet40\tModelNet10\tShapeNetCore55\tsynsetoffset\twnsynsetid\t"
                "wnsynsetkey\tmpcat40\tmpcat40index")
TABLE_ROWS = {
    "wall": "1\twall\twall\t8277\t1\t12\twall\twall\tWall\t\t\t\t\tn04546855\twall.n.01\twall\t1",
    "chair": "2\tchair\tchair\t4646\t5\t4\tchair\tchair\tChair\tchair\tchair\tchair\t3001627\t"
             "n03001627\tchair.n.01\tchair\t3",
    "office chair": "10\toffice chair\toffice chair\t595\t5\t4\tchair\tchair\tChair\tchair\t"
                    "chair\tchair\t3001627\tn04373704\tswivel_chair.n.01\tchair\t3",
    "ceiling": "41\tceiling\tceiling\t806\t22\t3\tceiling\tceiling\tCeiling\t\t\t\t\tn02990373\t"
               "ceiling.n.01\tceiling\t17",
    "table": "4\ttable\ttable\t1170\t7\t10\ttable\ttable\tTable\ttable\ttable\ttable\t4379243\t"
             "n04379243\ttable.n.02\ttable\t5",
    "trash can": "56\ttrash can\ttrash can\t1090\t39\t6\tgarbage bin\totherfurniture\tFurniture\t"
                 "\t\ttrash_bin\t2747177\tn02747177\tashcan.n.01\tobjects\t39",
    "box": "26\tbox\tbox\t775\t29\t7\tbox\tbox\tObjects\t\t\t\t\tn02883344\tbox.n.01\tobjects\t39",
    "bookshelf": "18\tbookshelf\tbookshelf\t360\t10\t6\tbookshelf\tbookshelf\tFurniture\t"
                 "bookshelf\t\tbookshelf\t2871439\tn02871439\tbookshelf.n.01\tshelving\t31",
    "desk": "9\tdesk\tdesk\t680\t14\t10\tdesk\tdesk\tTable\tdesk\tdesk\ttable\t4379243\t"
            "n03179701\tdesk.n.01\ttable\t5",
    "furnace": "363\tfurnace\tfurnace\t1\t39\t6\tfurnace\totherfurniture\tFurniture\t\t\t\t\t"
               "n03404449\tfurnace.n.01\t\t",
    "wardrobe cabinet": "1177\twardrobe cabinet\twardrobe \t18\t39\t6\twardrobe\totherfurniture\t"
                        "Furniture\twardrobe\t\t\t\tn04550184\twardrobe.n.01\tfurniture\t36",
}


def write_mesh(path, xyz, rgb=None, faces=None):
    """A binary little-endian PLY as the release's: float x y z, uchar red green blue alpha
    (no colour properties when `rgb` is None), triangles as `list uchar int vertex_indices`."""
    xyz = np.asarray(xyz, np.float32)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    vertex = np.empty(len(xyz), dtype=fields)
    for k, key in enumerate("xyz"):
        vertex[key] = xyz[:, k]
    if rgb is not None:
        for k, key in enumerate(("red", "green", "blue")):
            vertex[key] = np.asarray(rgb)[:, k]
        vertex["alpha"] = 255
    if faces is None:
        faces = [(i, i + 1, i + 2) for i in range(0, len(xyz) - 2, 3)]
    face = np.empty(len(faces), dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = np.asarray(faces, np.int32).reshape(-1, 3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"),
                     plyfile.PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"},
                                                 val_types={"vertex_indices": "i4"})],
                    text=False, byte_order="<").write(str(path))


def write_segments(path, seg_indices, scene):
    Path(path).write_text(json.dumps({"params": {"kThresh": "0.0001"}, "sceneId": scene,
                                      "segIndices": [int(s) for s in seg_indices]}))


def write_aggregation(path, scene, groups):
    """`groups`: (label, segments) pairs, numbered as the release numbers them."""
    Path(path).write_text(json.dumps({
        "sceneId": f"scannet.{scene}", "appId": "Aggregator.v2",
        "segGroups": [{"id": i, "objectId": i, "segments": list(segments), "label": label}
                      for i, (label, segments) in enumerate(groups)],
        "segmentsFile": f"scannet.{scene}_vh_clean_2.0.010000.segs.json"}))


def write_scene(folder, scene, xyz, rgb, seg_indices=None, groups=None):
    """`folder/<scene>/` with the mesh, and the segments and aggregation when `groups` is given."""
    scene_dir = Path(folder) / scene
    write_mesh(scene_dir / f"{scene}_vh_clean_2.ply", xyz, rgb)
    if groups is not None:
        write_segments(scene_dir / f"{scene}_vh_clean_2.0.010000.segs.json", seg_indices, scene)
        write_aggregation(scene_dir / f"{scene}.aggregation.json", scene, groups)
    return scene_dir


def write_table(path, labels=tuple(TABLE_ROWS)):
    Path(path).write_text("\n".join([TABLE_HEADER] + [TABLE_ROWS[k] for k in labels]) + "\n")


def write_splits(folder, train=(), val=(), test=()):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in (("train", train), ("val", val), ("test", test)):
        (folder / f"scannetv2_{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return folder
