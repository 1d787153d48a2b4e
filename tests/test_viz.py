"""PNG pictures (`jsnet_tf.viz`): read back with matplotlib and checked pixel by pixel."""

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from sklearn.metrics import confusion_matrix

from jsnet_tf import io as pio
from jsnet_tf import viz
from jsnet_tf.data import s3dis

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def _pixels(path) -> np.ndarray:
    image = imread(path)
    assert image.dtype == np.float32 and image.shape[2] in (3, 4)
    return np.rint(image[..., :3] * 255).astype(int)


def _count(pixels, color, tolerance=2) -> int:
    return int((np.abs(pixels - np.asarray(color)) <= tolerance).all(axis=-1).sum())


def _room(rng, per_class=60):
    """Three classes in three separate strips of a 6 m x 4 m room."""
    labels = np.repeat([0, 6, 8], per_class)
    xyz = np.column_stack([rng.uniform(0, 2, labels.size) + 2 * np.repeat([0, 1, 2], per_class),
                           rng.uniform(0, 4, labels.size), rng.uniform(0, 3, labels.size)])
    return xyz, labels


def _no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_top_view_is_a_legible_png_with_the_point_colours(tmp_path, rng):
    xyz, labels = _room(rng)
    path = tmp_path / "room.png"
    viz.render_top_view(path, xyz, pio.semantic_colors(labels, s3dis.PALETTE), title="office", point_size=40)
    pixels = _pixels(path)
    assert max(pixels.shape[:2]) == 1000
    width, height = np.ptp(xyz[:, :2], axis=0)
    assert pixels.shape[0] == pytest.approx(1000 * height / width, abs=1)  # the room's aspect
    for label in (0, 6, 8):
        assert _count(pixels, s3dis.PALETTE[label]) > 100
    assert _count(pixels, s3dis.PALETTE[1]) == 0                # a class not in the room
    assert _no_temp_files(tmp_path)


def test_top_view_accepts_unit_float_colours(tmp_path):
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    path = tmp_path / "floats.png"
    viz.render_top_view(path, xyz, np.array([RED, BLUE]) / 255.0, point_size=400)
    pixels = _pixels(path)
    assert _count(pixels, RED) > 50 and _count(pixels, BLUE) > 50


def _stack(order):
    """A red point above a blue one at the same x-y (listed in `order`), two green corners."""
    points = {"red": ([1.0, 1.0, 2.0], RED), "blue": ([1.0, 1.0, 0.0], BLUE)}
    chosen = [points[name] for name in order]
    xyz = np.array([p for p, _ in chosen] + [[0.0, 0.0, 1.0], [2.0, 2.0, 1.0]])
    colors = np.array([c for _, c in chosen] + [GREEN, GREEN], np.uint8)
    return xyz, colors


@pytest.mark.parametrize("order", [("red", "blue"), ("blue", "red")])
def test_higher_points_are_drawn_on_top(tmp_path, order):
    xyz, colors = _stack(order)
    path = tmp_path / "stack.png"
    viz.render_top_view(path, xyz, colors, point_size=300)
    pixels = _pixels(path)
    assert _count(pixels, RED) > 50
    assert _count(pixels, BLUE) == 0


def test_z_max_leaves_out_the_points_above(tmp_path):
    xyz, colors = _stack(("red", "blue"))
    path = tmp_path / "cut.png"
    viz.render_top_view(path, xyz, colors, point_size=300, z_max=1.5)
    pixels = _pixels(path)
    assert _count(pixels, RED) == 0 and _count(pixels, BLUE) > 50
    with pytest.raises(viz.VizError, match="z_max"):
        viz.render_top_view(path, xyz, colors, z_max=-1.0)


def test_subsampling_is_deterministic_and_bounded(tmp_path, rng):
    xyz = rng.uniform(0, 1, (400, 3))
    colors = np.where((np.arange(400) % 2 == 0)[:, None], RED, BLUE).astype(np.uint8)
    pictures = []
    for name in ("a.png", "b.png"):
        viz.render_top_view(tmp_path / name, xyz, colors, max_points=50, point_size=20)
        pictures.append(_pixels(tmp_path / name))
    np.testing.assert_array_equal(pictures[0], pictures[1])
    viz.render_top_view(tmp_path / "one.png", xyz[:2], colors[:2], max_points=1, point_size=300)
    pixels = _pixels(tmp_path / "one.png")
    assert (_count(pixels, RED) > 50) != (_count(pixels, BLUE) > 50)


def test_segmentation_panel_puts_each_panel_side_by_side(tmp_path, rng):
    xyz, labels = _room(rng, per_class=30)
    panels = {"GT": np.tile(np.array(RED, np.uint8), (len(xyz), 1)),
              "prediction": np.tile(np.array(BLUE, np.uint8), (len(xyz), 1)),
              "instances": pio.instance_colors(labels)}
    path = tmp_path / "panel.png"
    viz.render_segmentation_panel(path, xyz, panels, title="Area_5 office_1", point_size=40)
    pixels = _pixels(path)
    width, height = np.ptp(xyz[:, :2], axis=0)
    assert pixels.shape[1] == 3000
    assert pixels.shape[0] == pytest.approx(1000 * height / width, abs=1)
    thirds = np.split(pixels, 3, axis=1)
    assert _count(thirds[0], RED) > 100 and _count(thirds[0], BLUE) == 0
    assert _count(thirds[1], BLUE) > 100 and _count(thirds[1], RED) == 0
    for color in pio.instance_colors(np.array([0, 6, 8])):
        assert _count(thirds[2], color) > 100
        assert _count(thirds[0], color) == 0


@pytest.mark.parametrize("normalize", ["true", "pred", "all", None])
def test_normalize_confusion_matches_sklearn(rng, normalize):
    truth = rng.integers(0, 5, 300)
    truth[truth == 3] = 4                         # class 3 never occurs in the ground truth
    predicted = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 5, 300))
    predicted[predicted == 2] = 1                 # class 2 is never predicted
    counts = confusion_matrix(truth, predicted, labels=range(5))
    expected = confusion_matrix(truth, predicted, labels=range(5), normalize=normalize)
    np.testing.assert_allclose(viz.normalize_confusion(counts, normalize), expected, rtol=1e-12)


@pytest.mark.parametrize("normalize", ["true", None])
def test_confusion_matrix_png(tmp_path, normalize):
    counts = np.diag([50, 80, 20]) + np.array([[0, 0, 0], [0, 0, 0], [20, 0, 0]])
    path = tmp_path / "confusion.png"
    viz.render_confusion_matrix(path, counts, ["wall", "chair", "table"], normalize=normalize)
    pixels = _pixels(path)
    assert min(pixels.shape[:2]) >= 600
    blues = matplotlib.colormaps["Blues"]
    high = 1.0 if normalize else 80.0
    for value in (0.0, 50.0 / high if normalize is None else 1.0, 20.0 / high):
        color = np.rint(np.array(blues(value)[:3]) * 255)
        assert _count(pixels, color) > 500, value
    assert _no_temp_files(tmp_path)


def test_confusion_matrix_errors(tmp_path):
    with pytest.raises(viz.VizError, match="square"):
        viz.render_confusion_matrix(tmp_path / "c.png", np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(viz.VizError, match="class_names has 1 names"):
        viz.render_confusion_matrix(tmp_path / "c.png", np.eye(2), ["a"])
    with pytest.raises(viz.VizError, match="non-negative"):
        viz.normalize_confusion(-np.eye(2))
    with pytest.raises(viz.VizError, match="normalize"):
        viz.normalize_confusion(np.eye(2), "rows")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("xyz, colors, pattern", [
    (np.zeros((3, 2)), np.zeros((3, 3), np.uint8), r"xyz must be a non-empty \(N, 3\)"),
    (np.zeros((0, 3)), np.zeros((0, 3), np.uint8), "non-empty"),
    (np.array([[0, 0, np.nan], [0, 0, 0], [1, 1, 1]]), np.zeros((3, 3), np.uint8),
     "1 points with NaN"),
    (np.zeros((3, 3)), np.zeros((2, 3), np.uint8), r"must be an \(3, 3\) numeric array"),
    (np.zeros((3, 3)), np.full((3, 3), 1.5), r"must lie in 0..1"),
    (np.zeros((3, 3)), np.full((3, 3), 256), r"must lie in 0..255"),
])
def test_top_view_input_errors(tmp_path, xyz, colors, pattern):
    with pytest.raises(viz.VizError, match=pattern):
        viz.render_top_view(tmp_path / "bad.png", xyz, colors)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_the_old_picture_and_no_temp_file(tmp_path, rng, monkeypatch):
    xyz, labels = _room(rng, per_class=5)
    path = tmp_path / "room.png"
    viz.render_top_view(path, xyz, pio.semantic_colors(labels, s3dis.PALETTE))
    before = path.read_bytes()

    def fail(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        viz.render_top_view(path, xyz, pio.semantic_colors(labels, s3dis.PALETTE))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room.png"]


# ------------------------------------------------------------------------------------------------
# Legends and absent classes: the drawn figure is read back (artists and pixels)
# ------------------------------------------------------------------------------------------------

def _kept_figures(monkeypatch) -> list:
    """The figures the renderers save, kept for reading back (they are still saved)."""
    figures, save = [], viz._save

    def keep(fig, path):
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(viz, "_save", keep)
    return figures


def _box_in_pixels(extent, pixels):
    """A display-space box as PNG rows and columns (the PNG's rows run top down)."""
    height = pixels.shape[0]
    return (slice(int(height - extent.y1) + 2, int(height - extent.y0) - 2),
            slice(int(extent.x0) + 2, int(extent.x1) - 2))


def test_legends_name_the_drawn_classes_in_the_palette_colours_below_their_panels(tmp_path, rng, monkeypatch):
    from matplotlib.axes import Axes
    from matplotlib.legend import Legend

    from jsnet_tf.data.s3dis import CLASSES

    xyz, truth = _room(rng, per_class=40)                  # ceiling, door, chair
    xyz[:10, 2] = 2.9
    truth[:10] = 2                                         # wall, but above z_max: not drawn
    truth[10:15] = -1                                      # no label
    predicted = np.where(truth == 8, 9, truth)             # the chairs predicted as sofas
    panels = {"semantic ground truth": pio.semantic_colors(truth, s3dis.PALETTE),
              "semantic prediction": pio.semantic_colors(predicted, s3dis.PALETTE),
              "instance prediction": pio.instance_colors(np.arange(len(xyz)) % 7)}
    legends = {"semantic ground truth": (truth, CLASSES), "semantic prediction": (predicted, CLASSES)}
    figures = _kept_figures(monkeypatch)
    path = tmp_path / "panel.png"
    viz.render_segmentation_panel(path, xyz, panels, title="office", point_size=40, z_max=2.5, legends=legends)
    (fig,) = figures
    pixels = _pixels(path)
    drawn = sorted(fig.findobj(Legend), key=lambda legend: legend.get_window_extent().x0)
    assert len(drawn) == 2                                 # none under the instance panel
    views = sorted((ax for ax in fig.findobj(Axes) if ax.collections), key=lambda ax: ax.get_window_extent().x0)
    expected = {"semantic ground truth": [0, 6, 8, -1], "semantic prediction": [0, 6, 9, -1]}
    for legend, view, (name, labels) in zip(drawn, views, expected.items()):
        assert view.get_title() == name
        box, panel = legend.get_window_extent(), view.get_window_extent()
        assert box.y1 < panel.y0 and panel.x0 <= (box.x0 + box.x1) / 2 <= panel.x1   # below its panel
        names = [CLASSES[k] if k >= 0 else "no label" for k in labels]
        assert [text.get_text() for text in legend.get_texts()] == names
        palette = [s3dis.PALETTE[k] if k >= 0 else pio.NO_LABEL_COLOR for k in labels]
        swatches = [np.rint(np.array(h.get_facecolor()[:3]) * 255) for h in legend.legend_handles]
        np.testing.assert_array_equal(swatches, palette)
        region = pixels[_box_in_pixels(box, pixels)]
        for color in palette:                              # the swatches are drawn in the PNG
            assert _count(region, color) > 20, color
    assert _count(pixels, s3dis.PALETTE[2]) == 0    # the wall is neither drawn nor listed
    truth_legend = pixels[_box_in_pixels(drawn[0].get_window_extent(), pixels)]
    assert _count(truth_legend, s3dis.PALETTE[9]) == 0   # no sofa in the ground truth's legend


def test_a_top_view_legend_fits_a_narrow_hall(tmp_path, rng, monkeypatch):
    from matplotlib.legend import Legend

    labels = np.arange(13).repeat(20)
    xyz = np.column_stack([rng.uniform(0, 1, labels.size), rng.uniform(0, 12, labels.size), np.zeros(labels.size)])
    names = [f"class number {k}" for k in range(13)]
    figures = _kept_figures(monkeypatch)
    viz.render_top_view(tmp_path / "hall.png", xyz, pio.semantic_colors(labels, s3dis.PALETTE), title="hall", legend=(labels, names))
    (legend,) = figures[0].findobj(Legend)
    assert [t.get_text() for t in legend.get_texts()] == names
    width, height = figures[0].bbox.width, figures[0].bbox.height
    box = legend.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height   # inside the picture


@pytest.mark.parametrize("legends, pattern", [
    ({"elsewhere": (np.zeros(3, int), ["a"])}, r"legends for \['elsewhere'\], which are not among the panels"),
    ({"semantic": (np.zeros(2, int), ["a"])}, r"must be \(3,\) integers"),
    ({"semantic": (np.zeros(3), ["a"])}, r"must be \(3,\) integers"),
    ({"semantic": (np.array([0, 1, 2]), ["a", "b"])}, r"must lie in -1..1 \(2 class names\), found 2"),
    ({"instance": (np.zeros(3, int), ["a"])}, r"draws class 'a' in 3 colours"),
])
def test_legend_errors(tmp_path, legends, pattern):
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    panels = {"semantic": np.zeros((3, 3), np.uint8), "instance": np.array([RED, BLUE, GREEN], np.uint8)}
    with pytest.raises(viz.VizError, match=pattern):
        viz.render_segmentation_panel(tmp_path / "bad.png", xyz, panels, legends=legends)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("normalize", ["true", None])
def test_a_class_absent_from_the_ground_truth_leaves_its_row_blank(tmp_path, monkeypatch, normalize):
    counts = np.array([[40, 10, 0], [0, 0, 0], [5, 0, 30]])   # chair: predicted, never true
    figures = _kept_figures(monkeypatch)
    path = tmp_path / "confusion.png"
    viz.render_confusion_matrix(path, counts, ["wall", "chair", "table"], normalize=normalize)
    (fig,) = figures
    (ax,) = [a for a in fig.axes if a.images]
    drawn = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(drawn), np.repeat([[False], [True], [False]], 3, axis=1))
    numbers = [t for t in ax.texts if t.get_text() != viz.ABSENT_ROW_NOTE]
    assert len(numbers) == 6 and all(t.get_position()[1] != 1 for t in numbers)
    (note,) = [t for t in ax.texts if t.get_text() == viz.ABSENT_ROW_NOTE]
    assert note.get_position()[1] == 1
    assert "blank rows" in ax.get_title()
    pixels = _pixels(path)
    empty = np.rint(np.array(matplotlib.colormaps["Blues"](0.0)[:3]) * 255)   # a cell holding 0

    def cell(row, column):
        corners = ax.transData.transform([[column - 0.45, row + 0.45], [column + 0.45, row - 0.45]])
        return pixels[_box_in_pixels(matplotlib.transforms.Bbox(corners), pixels)]

    assert _count(cell(0, 2), empty) > 0.5 * cell(0, 2).shape[0] * cell(0, 2).shape[1]   # a true 0
    for column in range(3):
        assert _count(cell(1, column), empty) == 0         # the absent row holds no "0" colour
    assert _count(cell(1, 0), (255, 255, 255), tolerance=0) > 0
