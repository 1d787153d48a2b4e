"""The built-in synthetic S3DIS goes through prepare_s3dis unchanged, labels intact."""

import numpy as np

from jsnet_tf.data import prepare_s3dis, s3dis, synthetic


def test_synthetic_rooms_round_trip_through_prepare(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    synthetic.generate(raw, seed=3, areas=2, rooms_per_area=1, points_per_m2=150)
    prepare_s3dis.prepare(raw, out, progress=False)
    for area in (1, 2):
        room_dir = next((raw / f"Area_{area}").iterdir())
        room = s3dis.load_room(out / "rooms" / f"Area_{area}_{room_dir.name}.npz")
        annotations = sorted((room_dir / "Annotations").glob("*.txt"))
        assert len(np.unique(room.instance)) == len(annotations)
        for instance_id, path in enumerate(annotations):  # one instance per file, in sorted order
            class_name = path.stem.rsplit("_", 1)[0]
            count = sum(1 for line in path.read_text().splitlines() if line.strip())
            members = room.semantic[room.instance == instance_id]
            assert len(members) == count and (members == s3dis.CLASSES.index(class_name)).all(), path.name
        assert room.xyz.min() >= 0  # shifted to the room's origin
        blocks = s3dis.read_blocks_h5(out / "blocks" / f"Area_{area}_{room_dir.name}.h5")
        assert blocks.data.shape[1:] == (4096, 9) and len(blocks.data) > 0
        np.testing.assert_array_equal(blocks.semantic, room.semantic[blocks.indices])
        np.testing.assert_array_equal(blocks.instance, room.instance[blocks.indices])
    test_rooms = s3dis.read_file_list(out / "lists" / "test_file_list_Area2.txt")
    assert [p.name for p in test_rooms] == [f"Area_2_{next((raw / 'Area_2').iterdir()).name}.npz"]
