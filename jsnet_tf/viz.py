"""PNG pictures of rooms and results: top views coloured per point, side-by-side panels (the
semantic ones with a legend of the classes they show), and confusion matrices. NumPy +
matplotlib's Agg canvas only (no pyplot, no display, no global backend change); every picture
is written atomically.

Colours are (N, 3) arrays: integers 0..255 (as from `jsnet_tf.io.semantic_colors` /
`instance_colors`) or floats in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from jsnet_tf.errors import UserError
from jsnet_tf.files import AtomicTarget

DPI = 100
PANEL_INCHES = 10.0    # the longer side of one top view: 1000 px at DPI
NORMALIZATIONS = ("true", "pred", "all", None)
LEGEND_FONT = 12.0           # pt: about 17 px at DPI, as legible as the panel titles
NO_LABEL_NAME = "no label"   # the legend's name for label -1
ABSENT_ROW_NOTE = "absent from the ground truth"   # written across a confusion row with no point


class VizError(UserError, ValueError):
    """Arrays that cannot be drawn; the message names the argument and the problem."""


# ------------------------------------------------------------------------------------------------
# Top views
# ------------------------------------------------------------------------------------------------

def render_top_view(path: str | os.PathLike, xyz: np.ndarray, colors: np.ndarray,
                    title: str | None = None, point_size: float | None = None,
                    max_points: int = 200_000, z_max: float | None = None,
                    legend: tuple[np.ndarray, Sequence[str]] | None = None) -> None:
    """Saves a top (x-y) view of the points as a PNG, about 1000 px on its longer side.

    Points are drawn in order of height, so higher points cover lower ones (a table top hides
    the floor below it). Beyond `max_points` a fixed random subset is drawn, so the same input
    always gives the same picture. `point_size` is the marker area in pt^2 (default: from the
    point density). Points above `z_max` are left out: a room's ceiling, drawn last, would
    otherwise hide everything under it. `legend`: `(labels, class_names)` of a semantic view,
    as in `render_segmentation_panel`.
    """
    render_segmentation_panel(path, xyz, {title or "": colors}, point_size=point_size,
                              max_points=max_points, z_max=z_max,
                              legends=None if legend is None else {title or "": legend})


def render_segmentation_panel(path: str | os.PathLike, xyz: np.ndarray,
                              panels: Mapping[str, np.ndarray], title: str | None = None,
                              point_size: float | None = None,
                              max_points: int = 200_000, z_max: float | None = None,
                              legends: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None) -> None:
    """Saves top views of the same points side by side, one per `{panel title: colors}`.

    E.g. `{"GT semantic": ..., "predicted semantic": ..., "GT instance": ...,
    "predicted instance": ...}`. All panels draw the same points in the same order and share
    their axes. `title` goes above all panels; the other arguments are `render_top_view`'s.

    `legends` maps the title of a semantic panel to `(labels, class_names)`: each point's class
    id (-1: no label) and the name of every class id. Below that panel a legend names the
    classes among its drawn points, each with the colour its points have in the panel (the
    legend shows what is drawn; a class drawn in two colours is an error). Instance panels
    take none: their colours name no class.
    """
    xyz = _points(xyz)
    if not panels:
        raise VizError("panels must hold at least one {title: colors} entry")
    if max_points < 1:
        raise VizError(f"max_points must be positive, got {max_points}")
    legends = dict(legends or {})
    unknown = [name for name in legends if name not in panels]
    if unknown:
        raise VizError(f"legends for {unknown}, which are not among the panels {list(panels)}")
    shown = _drawing_order(xyz, max_points, z_max)
    panel_colors = {name: _colors(colors, len(xyz), f"colors of panel {name!r}")[shown]
                    for name, colors in panels.items()}
    entries = {name: _legend_entries(_labels(labels, len(xyz), class_names, name)[shown],
                                     panel_colors[name], class_names, name)
               for name, (labels, class_names) in legends.items()}
    xy = xyz[shown, :2]
    width, height = _panel_inches(xyz)
    columns = {name: _legend_columns(found, width) for name, found in entries.items()}
    legend_height = max((_legend_inches(len(entries[name]), count) for name, count in columns.items()),
                        default=0.0)
    fig = Figure(figsize=(width * len(panels), height + legend_height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    views = fig
    if legends:  # a row of axis-less cells below the panels, one legend under each semantic panel
        views, below = fig.subfigures(2, 1, height_ratios=[height, legend_height])
        legend_cells = below.subplots(1, len(panels), squeeze=False)[0]
        for cell in legend_cells:
            cell.axis("off")
    axes = views.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    if point_size is None:
        point_size = _auto_point_size(width, height, len(shown))
    for index, (ax, (name, colors)) in enumerate(zip(axes, panel_colors.items())):
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=point_size, marker="o", linewidths=0)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        if name:
            ax.set_title(name)
        if name in entries:
            handles = [Patch(facecolor=color, edgecolor="0.3", linewidth=0.5, label=label)
                       for label, color in entries[name]]
            legend_cells[index].legend(handles=handles, loc="upper center", ncols=columns[name], frameon=False,
                                       fontsize=LEGEND_FONT, handlelength=1.6, handleheight=1.1,
                                       columnspacing=1.5)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _labels(labels, n: int, class_names: Sequence[str], panel: str) -> np.ndarray:
    """The class ids of a legend, checked: (n,) integers in -1..len(class_names) - 1."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise VizError(f"labels of the legend of panel {panel!r} must be ({n},) integers, got shape "
                       f"{labels.shape} of {labels.dtype}")
    outside = labels[(labels < -1) | (labels >= len(class_names))]
    if len(outside):
        raise VizError(f"labels of the legend of panel {panel!r} must lie in -1..{len(class_names) - 1} "
                       f"({len(class_names)} class names), found {outside[0]}")
    return labels


def _legend_entries(labels: np.ndarray, colors: np.ndarray, class_names: Sequence[str],
                    panel: str) -> list[tuple[str, np.ndarray]]:
    """(name, colour) of each class among the drawn points, in class order, "no label" last."""
    pairs = np.unique(np.column_stack([labels, colors]), axis=0)   # sorted by label, then colour
    classes, first, counts = np.unique(pairs[:, 0], return_index=True, return_counts=True)
    if (counts > 1).any():
        label = int(classes[counts > 1][0])
        name = NO_LABEL_NAME if label < 0 else class_names[label]
        raise VizError(f"panel {panel!r} draws class {name!r} in {counts.max()} colours: its legend needs "
                       f"one colour per class")
    entries = [(NO_LABEL_NAME if label < 0 else str(class_names[int(label)]), pairs[row, 1:])
               for label, row in zip(classes, first)]
    return entries[1:] + entries[:1] if classes[0] < 0 else entries


def _legend_columns(entries: Sequence[tuple[str, np.ndarray]], panel_width: float) -> int:
    """Legend columns under a panel `panel_width` inches wide: as few rows as fit, the entries
    spread evenly over them (8 entries in two rows of 4, not 7 + 1)."""
    longest = max(len(name) for name, _ in entries)
    entry_points = LEGEND_FONT * (0.6 * longest + 4.0)   # swatch, gap, text, column spacing
    fitting = int(np.clip(panel_width * 72 // entry_points, 1, len(entries)))
    rows = -(-len(entries) // fitting)
    return -(-len(entries) // rows)


def _legend_inches(count: int, columns: int) -> float:
    """The height of a legend of `count` entries in `columns` columns, with a margin."""
    rows = -(-count // columns)
    return (1.8 * rows + 1.0) * LEGEND_FONT / 72


def _points(xyz) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.dtype.kind not in "iuf" or len(xyz) == 0:
        raise VizError(f"xyz must be a non-empty (N, 3) numeric array, got shape {xyz.shape} "
                       f"of {xyz.dtype}")
    xyz = xyz.astype(np.float64)
    if not np.isfinite(xyz).all():
        raise VizError(f"xyz has {int((~np.isfinite(xyz).all(axis=1)).sum())} points with NaN "
                       f"or infinite coordinates")
    return xyz


def _colors(colors, n: int, what: str) -> np.ndarray:
    """(n, 3) colours -> floats in [0, 1]."""
    colors = np.asarray(colors)
    if colors.shape != (n, 3) or colors.dtype.kind not in "iuf":
        raise VizError(f"{what} must be an ({n}, 3) numeric array, got shape {colors.shape} "
                       f"of {colors.dtype}")
    high = 255 if colors.dtype.kind in "iu" else 1
    if not (np.isfinite(colors).all() and colors.min() >= 0 and colors.max() <= high):
        raise VizError(f"{what} must lie in 0..{high} ({colors.dtype})")
    return colors.astype(np.float64) / high


def _drawing_order(xyz: np.ndarray, max_points: int, z_max: float | None) -> np.ndarray:
    """Indices of the points to draw, lowest first; a seeded subset if there are too many."""
    index = np.arange(len(xyz)) if z_max is None else np.flatnonzero(xyz[:, 2] <= z_max)
    if len(index) == 0:
        raise VizError(f"no point lies at or below z_max={z_max} (lowest z: {xyz[:, 2].min()})")
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(0).choice(index, max_points, replace=False))
    return index[np.argsort(xyz[index, 2], kind="stable")]


def _panel_inches(xyz: np.ndarray) -> tuple[float, float]:
    """(width, height) of one top view: the longer side PANEL_INCHES, the room's aspect kept
    within 1:3 (long halls still get a readable short side)."""
    extent = np.ptp(xyz[:, :2], axis=0)
    dx, dy = np.maximum(extent, 1e-9)
    ratio = float(np.clip(dy / dx, 1 / 3, 3))
    if ratio <= 1:
        return PANEL_INCHES, PANEL_INCHES * ratio
    return PANEL_INCHES / ratio, PANEL_INCHES


def _auto_point_size(width: float, height: float, count: int) -> float:
    """Marker area (pt^2) that lets `count` points about cover one panel, within 0.2..60."""
    area = (width * 72 * 0.8) * (height * 72 * 0.8)
    return float(np.clip(1.5 * area / count, 0.2, 60.0))


def _save(fig: Figure, path) -> None:
    with AtomicTarget(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


# ------------------------------------------------------------------------------------------------
# Confusion matrix
# ------------------------------------------------------------------------------------------------

def normalize_confusion(confusion: np.ndarray, normalize: str | None = "true") -> np.ndarray:
    """A confusion matrix (rows = ground truth) as float64 fractions, as sklearn normalises it.

    "true": each row sums to 1 (recall on the diagonal); "pred": each column (precision);
    "all": the whole matrix; None: the counts. Rows / columns with no samples stay 0.
    """
    confusion = _confusion(confusion)
    if normalize not in NORMALIZATIONS:
        raise VizError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if normalize is None:
        return confusion
    total = {"true": confusion.sum(axis=1, keepdims=True),
             "pred": confusion.sum(axis=0, keepdims=True),
             "all": confusion.sum()}[normalize]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(confusion / total)


def render_confusion_matrix(path: str | os.PathLike, confusion: np.ndarray,
                            class_names: Sequence[str], normalize: str | None = "true",
                            title: str | None = None) -> None:
    """Saves a confusion matrix (rows = ground truth, columns = prediction) as a PNG, every
    cell annotated with its value, plus a colour bar.

    The row of a class with no ground-truth point is left blank (hatched, no numbers, marked
    "absent from the ground truth"): its zeros would read as 0% recall. Columns are drawn as
    they are (a class never predicted is a column of zeros)."""
    values = normalize_confusion(confusion, normalize)
    size = len(values)
    if len(class_names) != size:
        raise VizError(f"class_names has {len(class_names)} names for a {size} x {size} "
                       f"confusion matrix")
    absent = _confusion(confusion).sum(axis=1) == 0
    high = 1.0 if normalize else max(float(values.max()), 1.0)
    inches = max(6.0, 0.55 * size + 3.0)
    fig = Figure(figsize=(inches + 1.0, inches), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = np.ma.masked_array(values, np.repeat(absent[:, None], size, axis=1))
    image = ax.imshow(shown, cmap=colormaps["Blues"].with_extremes(bad="white"), vmin=0.0, vmax=high)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction" if normalize else "count")
    text_format = "{:.2f}" if normalize else "{:.0f}"
    font = max(5.0, min(10.0, 120.0 / size))
    for row in range(size):
        if absent[row]:
            ax.add_patch(Rectangle((-0.5, row - 0.5), size, 1, fill=False, hatch="//", edgecolor="0.85",
                                   linewidth=0))
            ax.text((size - 1) / 2, row, ABSENT_ROW_NOTE, ha="center", va="center", fontsize=font,
                    color="0.35", style="italic", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
            continue
        for column in range(size):
            value = values[row, column]
            ax.text(column, row, text_format.format(value), ha="center", va="center",
                    fontsize=font, color="white" if value > 0.5 * high else "black")
    ax.set_xticks(range(size), labels=list(class_names), rotation=45, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(size), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    heading = title or "confusion matrix " + {
        "true": "(each row sums to 1)", "pred": "(each column sums to 1)",
        "all": "(fractions of all points)", None: "(counts)"}[normalize]
    if absent.any():
        heading += "\nblank rows: classes with no ground-truth point"
    ax.set_title(heading)
    _save(fig, path)


def _confusion(confusion) -> np.ndarray:
    confusion = np.asarray(confusion)
    if (confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]
            or confusion.shape[0] == 0 or confusion.dtype.kind not in "iuf"):
        raise VizError(f"confusion must be a square (C, C) numeric array, got shape "
                       f"{confusion.shape} of {confusion.dtype}")
    confusion = confusion.astype(np.float64)
    if not np.isfinite(confusion).all() or confusion.min() < 0:
        raise VizError("confusion must hold finite, non-negative counts")
    return confusion
