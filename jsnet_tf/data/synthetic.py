"""Built-in synthetic S3DIS: indoor rooms written in the raw Stanford3dDataset_v1.2 layout.

    python -m jsnet_tf.data.synthetic --out DIR --seed 0 [--areas 6] [--rooms_per_area 2]
        [--points_per_m2 1000] [--overwrite]

writes ``DIR/Area_N/<room>/<room>.txt`` (every point of the room) and
``DIR/Area_N/<room>/Annotations/<class>_<i>.txt`` (one file per object instance, ``i`` counting
from 1 per class and room), each line ``X Y Z R G B`` (metres with 3 decimals, RGB integers
0..255), so every S3DIS command runs unchanged on it. As in the real data set the room file is
the concatenation of its annotation files, and rooms sit at their own offsets in the area's
coordinate frame.

Rooms (offices, conference rooms, hallways, storage rooms, lounges) have a floor, a ceiling and
four walls with doors and windows cut into them, optional beams under the ceiling and columns
at the walls, and furniture: tables with chairs pushed against them, sofas, rows of touching
bookcases, boards on the walls and clutter on tables, shelves and the floor. Points are sampled
on the surfaces with a density that falls off with the distance to one to three scanner
positions, get ~5 mm Gaussian noise, and a colour from a per-class base with per-instance and
per-point variation. Surfaces hidden by furniture (floor under a sofa, wall behind a bookcase,
faces pressed against a wall) are left out, as a scanner would.

Generation is deterministic: a room depends only on ``seed``, its area and its index in the
area, so an interrupted run can be resumed (existing rooms are skipped) and gives the same
files as an uninterrupted one. Each room is written into a temporary folder outside the
``Area_N`` folders and renamed into place when complete, so no partial room is ever visible.

Python API: `generate` writes a data set, `make_room` builds one room in memory.
"""

import os
import shutil
import time
from typing import NamedTuple

import numpy as np

CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair",
           "sofa", "bookcase", "board", "clutter")

ROOM_TYPES = ("office", "conferenceRoom", "hallway", "storage", "lounge")
_TYPE_WEIGHTS = (0.45, 0.15, 0.15, 0.1, 0.15)

DEFAULT_POINTS_PER_M2 = 1000.0
NOISE_SIGMA = 0.005  # metres
_TMP_DIR = ".synthetic_tmp"

_BASE_RGB = {
    "ceiling": (205, 205, 198), "floor": (125, 112, 98), "wall": (188, 182, 170),
    "beam": (196, 190, 180), "column": (176, 172, 162), "window": (135, 158, 182),
    "door": (138, 98, 66), "table": (152, 112, 74), "chair": (62, 64, 76),
    "sofa": (104, 62, 58), "bookcase": (128, 104, 82), "board": (228, 228, 224),
    "clutter": (128, 128, 128),
}


class Room(NamedTuple):
    """One synthetic room: per-point arrays, all of length N, ordered by instance."""
    xyz: np.ndarray       # (N, 3) float64, metres, rounded to millimetres
    rgb: np.ndarray       # (N, 3) uint8
    semantic: np.ndarray  # (N,) str, class name of each point (one of CLASSES)
    instance: np.ndarray  # (N,) int32, instance id 0..K-1 within the room (annotation order)


def room_type(name):
    """`office_3` -> `office`."""
    return name.rsplit("_", 1)[0]


def _draw_size(rng, kind):
    if kind == "hallway":
        return rng.uniform(6.0, 10.0), rng.uniform(1.8, 2.8), rng.uniform(2.7, 3.2)
    if kind == "storage":
        return rng.uniform(3.0, 5.0), rng.uniform(3.0, 4.5), rng.uniform(2.7, 3.2)
    if kind == "conferenceRoom":
        return rng.uniform(6.0, 10.0), rng.uniform(4.5, 8.0), rng.uniform(2.9, 3.5)
    return rng.uniform(3.5, 9.0), rng.uniform(3.0, 7.0), rng.uniform(2.7, 3.4)


# ----------------------------------------------------------------------------------------------
# Surface sampling


def _rect(rng, density, origin, u, v):
    """Uniform points on the parallelogram origin + a*u + b*v, a, b in [0, 1]."""
    origin, u, v = (np.asarray(a, np.float64) for a in (origin, u, v))
    area = float(np.linalg.norm(np.cross(u, v)))
    n = rng.poisson(area * density)
    ab = rng.random((n, 2))
    return origin + ab[:, :1] * u + ab[:, 1:] * v


def _box(rng, density, lo, hi, top=True, bottom=True):
    """Points on the faces of the axis-aligned box [lo, hi]."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    dx, dy, dz = hi - lo
    ex, ey, ez = np.array([dx, 0, 0]), np.array([0, dy, 0]), np.array([0, 0, dz])
    faces = [
        _rect(rng, density, lo, ex, ez), _rect(rng, density, lo + ey, ex, ez),
        _rect(rng, density, lo, ey, ez), _rect(rng, density, lo + ex, ey, ez),
    ]
    if bottom:
        faces.append(_rect(rng, density, lo, ex, ey))
    if top:
        faces.append(_rect(rng, density, lo + ez, ex, ey))
    return np.concatenate(faces)


def _inside(points, boxes, margin=0.0):
    """Mask of points inside any of the boxes (lo, hi), grown by margin."""
    mask = np.zeros(len(points), bool)
    for lo, hi in boxes:
        lo, hi = np.asarray(lo) - margin, np.asarray(hi) + margin
        mask |= np.all((points >= lo) & (points <= hi), axis=1)
    return mask


class _Walls:
    """The four walls: wall w runs from corner w along `t` with `n` pointing into the room."""

    def __init__(self, length, width):
        self.origin = [np.array(o, float) for o in
                       ((0, 0), (length, 0), (length, width), (0, width))]
        self.t = [np.array(t, float) for t in ((1, 0), (0, 1), (-1, 0), (0, -1))]
        self.n = [np.array(n, float) for n in ((0, 1), (-1, 0), (0, -1), (1, 0))]
        self.length = [length, width, length, width]
        self.used = [[] for _ in range(4)]  # (s0, s1, z0, z1) taken along each wall

    def footprint(self, w, s0, s1, d0, d1):
        """Axis-aligned (xy_lo, xy_hi) of the strip s in [s0, s1], depth in [d0, d1] off wall w."""
        corners = np.array([self.origin[w] + s * self.t[w] + d * self.n[w]
                            for s in (s0, s1) for d in (d0, d1)])
        return corners.min(0), corners.max(0)

    def box(self, w, s0, s1, d0, d1, z0, z1):
        lo, hi = self.footprint(w, s0, s1, d0, d1)
        return np.array([lo[0], lo[1], z0]), np.array([hi[0], hi[1], z1])

    def free(self, w, s0, s1, z0, z1, gap=0.0):
        if s0 < 0.05 or s1 > self.length[w] - 0.05:
            return False
        return all(s1 + gap <= a or s0 >= b + gap or z1 <= c or z0 >= d
                   for a, b, c, d in self.used[w])

    def place(self, rng, width, z0, z1, gap=0.0, tries=30, walls=None):
        """Random free slot of `width` along a wall; returns (wall, s0) or None."""
        for _ in range(tries):
            w = int(rng.choice(walls if walls is not None else 4))
            if self.length[w] < width + 0.2:
                continue
            s0 = rng.uniform(0.1, self.length[w] - width - 0.1)
            if self.free(w, s0, s0 + width, z0, z1, gap):
                self.used[w].append((s0, s0 + width, z0, z1))
                return w, s0
        return None


class _Floor:
    """Rectangles taken on the floor (xy), to keep furniture from intersecting."""

    def __init__(self, length, width):
        self.size = (length, width)
        self.used = []

    def free(self, lo, hi, gap=0.0):
        if lo[0] < 0 or lo[1] < 0 or hi[0] > self.size[0] or hi[1] > self.size[1]:
            return False
        return all(hi[0] + gap <= a[0] or lo[0] >= b[0] + gap or
                   hi[1] + gap <= a[1] or lo[1] >= b[1] + gap for a, b in self.used)

    def take(self, lo, hi):
        self.used.append((np.asarray(lo, float), np.asarray(hi, float)))


# ----------------------------------------------------------------------------------------------
# Room


def make_room(rng, name, points_per_m2=DEFAULT_POINTS_PER_M2, size=None, origin=(0.0, 0.0, 0.0)):
    """Builds one room; returns a `Room` (xyz, rgb, semantic, instance), ordered by instance.

    Args:
      rng: a `np.random.Generator`; the room is a deterministic function of its state.
      name: room name such as `office_1`; the prefix (office, conferenceRoom, hallway, storage,
        lounge, anything else is furnished as an office) picks size range and furniture.
      points_per_m2: surface sampling density next to a scanner (it falls off further away).
      size: (length, width, height) in metres; drawn from the room type's range when None.
      origin: offset of the room's (0, 0, 0) corner in the area's coordinate frame.
    """
    kind = room_type(name)
    length, width, height = size if size is not None else _draw_size(rng, kind)
    dens = float(points_per_m2)
    walls, floor = _Walls(length, width), _Floor(length, width)
    objects = []   # (class, [point arrays]) in creation order
    solids = []    # boxes hiding wall/floor/ceiling points
    holes = []     # boxes cut out of the walls (windows, doors)

    def add(cls, parts):
        parts = [p for p in parts if len(p)]
        objects.append((cls, np.concatenate(parts) if parts else np.zeros((0, 3))))

    def solid_box(lo, hi, top=True, bottom=True, hide=True):
        if hide:
            solids.append((np.asarray(lo), np.asarray(hi)))
        return _box(rng, dens, lo, hi, top, bottom)

    def count(lo, hi):
        return int(rng.integers(lo, hi + 1))

    # --- openings in the walls: doors first (every room has one), then windows
    n_doors = count(2, 3) if kind == "hallway" else (2 if rng.random() < 0.2 else 1)
    for _ in range(n_doors):
        dw = rng.uniform(1.5, 1.8) if rng.random() < 0.15 else rng.uniform(0.8, 1.0)
        dh = rng.uniform(2.0, 2.2)
        slot = walls.place(rng, dw, 0.0, dh, gap=0.3)
        if slot is None:
            continue
        w, s0 = slot
        off = rng.uniform(-0.04, 0.03)
        lo, hi = walls.box(w, s0, s0 + dw, -0.3, 0.3, 0.0, dh)
        holes.append((lo, hi))
        p0 = walls.origin[w] + s0 * walls.t[w] + off * walls.n[w]
        add("door", [_rect(rng, dens, (*p0, 0.0), (*(dw * walls.t[w]), 0.0), (0, 0, dh))])
        fl, fh = walls.footprint(w, s0 - 0.1, s0 + dw + 0.1, 0.0, 1.0)
        floor.take(fl, fh)   # keep the doorway clear
    n_windows = {"hallway": count(0, 1), "storage": count(0, 1)}.get(kind, count(1, 3))
    for _ in range(n_windows):
        ww, z0 = rng.uniform(1.0, 2.4), rng.uniform(0.8, 1.0)
        z1 = min(height - 0.3, z0 + rng.uniform(1.1, 1.6))
        slot = walls.place(rng, ww, z0, z1, gap=0.2, walls=[0, 2] if length > width else [1, 3])
        if slot is None:
            continue
        w, s0 = slot
        off = -rng.uniform(0.03, 0.12)   # recessed into the wall
        holes.append(walls.box(w, s0, s0 + ww, -0.3, 0.3, z0, z1))
        p0 = walls.origin[w] + s0 * walls.t[w] + off * walls.n[w]
        add("window", [_rect(rng, dens, (*p0, z0), (*(ww * walls.t[w]), 0.0), (0, 0, z1 - z0))])

    # --- structure: beams under the ceiling, columns at the walls
    if rng.random() < 0.5:
        along_y = length >= width
        span = length if along_y else width
        for _ in range(count(1, 2)):
            bw, bd = rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.6)
            c = rng.uniform(0.8, span - 0.8 - bw)
            if along_y:
                lo, hi = (c, 0.0, height - bd), (c + bw, width, height)
            else:
                lo, hi = (0.0, c, height - bd), (length, c + bw, height)
            add("beam", [solid_box(lo, hi)])
    if rng.random() < 0.5:
        for _ in range(count(1, 2)):
            cw, cd = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)
            if rng.random() < 0.5:   # in a corner
                w, s0 = int(rng.integers(4)), 0.0
                if not walls.free(w, 0.06, cw, 0, height):
                    continue
                walls.used[w].append((0.0, cw, 0.0, height))
            else:
                slot = walls.place(rng, cw, 0.0, height, gap=0.1)
                if slot is None:
                    continue
                w, s0 = slot
            lo, hi = walls.box(w, s0, s0 + cw, 0.0, cd, 0.0, height)
            floor.take(lo[:2], hi[:2])
            add("column", [solid_box(lo, hi)])

    # --- furniture against the walls: bookcases (in touching rows), sofas, boards
    shelf_tops = []
    n_rows = {"storage": count(2, 3), "hallway": count(0, 1), "lounge": count(0, 1),
              "conferenceRoom": count(0, 1)}.get(kind, count(1, 2))
    for _ in range(n_rows):
        k = count(1, 3) if kind != "storage" else count(2, 4)
        widths = rng.uniform(0.7, 1.2, k)
        bh, depth = rng.uniform(1.6, min(2.3, height - 0.3)), rng.uniform(0.3, 0.45)
        slot = walls.place(rng, widths.sum(), 0.0, bh, gap=0.05)
        if slot is None:
            continue
        w, s = slot
        for bw in widths:
            lo, hi = walls.box(w, s, s + bw, 0.0, depth, 0.0, bh)
            floor.take(lo[:2], hi[:2])
            parts = [solid_box(lo, hi)]
            # shelf boards across the open front, books pushed in behind
            nshelf = count(3, 5)
            for j in range(1, nshelf):
                z = bh * j / nshelf
                blo, bhi = walls.box(w, s + 0.03, s + bw - 0.03, 0.02, depth, z, z + 0.02)
                parts.append(_box(rng, dens, blo, bhi))
            shelf_tops.append((lo, hi))
            add("bookcase", parts)
            s += bw
    n_sofas = {"lounge": count(1, 3), "office": count(0, 1)}.get(kind, 0)
    for _ in range(n_sofas):
        sw, sd = rng.uniform(1.5, 2.3), rng.uniform(0.75, 0.95)
        slot = walls.place(rng, sw, 0.0, 0.9, gap=0.2)
        if slot is None:
            continue
        w, s0 = slot
        lo, hi = walls.box(w, s0, s0 + sw, 0.0, sd, 0.0, 0.9)
        if not floor.free(lo[:2], hi[:2]):
            walls.used[w].pop()
            continue
        floor.take(lo[:2], hi[:2])
        parts = [solid_box(*walls.box(w, s0, s0 + sw, 0.0, sd, 0.0, 0.42)),
                 solid_box(*walls.box(w, s0, s0 + sw, 0.0, 0.22, 0.42, 0.85)),
                 solid_box(*walls.box(w, s0, s0 + 0.2, 0.22, sd, 0.42, 0.62)),
                 solid_box(*walls.box(w, s0 + sw - 0.2, s0 + sw, 0.22, sd, 0.42, 0.62))]
        add("sofa", parts)
    n_boards = {"conferenceRoom": count(1, 2), "office": count(1, 2),
                "hallway": count(0, 1)}.get(kind, count(0, 1))
    for _ in range(n_boards):
        bw, z0 = rng.uniform(1.2, 3.0), rng.uniform(0.85, 1.05)
        z1 = min(height - 0.3, z0 + rng.uniform(0.9, 1.25))
        slot = walls.place(rng, bw, z0, z1, gap=0.1)
        if slot is None:
            continue
        w, s0 = slot
        lo, hi = walls.box(w, s0, s0 + bw, 0.0, 0.025, z0, z1)
        add("board", [solid_box(lo, hi)])

    # --- tables in the open floor, chairs pushed against them
    table_tops = []
    n_tables = {"conferenceRoom": count(1, 2), "office": count(1, 4), "lounge": count(1, 2),
                "storage": count(0, 1)}.get(kind, 0)
    for _ in range(n_tables):
        big = kind == "conferenceRoom"
        tl = rng.uniform(2.4, 4.0) if big else rng.uniform(1.1, 2.0)
        tw = rng.uniform(1.0, 1.5) if big else rng.uniform(0.6, 1.0)
        th = rng.uniform(0.71, 0.77)
        if rng.random() < 0.5:
            tl, tw = tw, tl
        for _ in range(40):
            x0, y0 = rng.uniform(0.1, length - tl - 0.1), rng.uniform(0.1, width - tw - 0.1)
            if floor.free((x0 - 0.6, y0 - 0.6), (x0 + tl + 0.6, y0 + tw + 0.6)):
                break
        else:
            continue
        floor.take((x0 - 0.5, y0 - 0.5), (x0 + tl + 0.5, y0 + tw + 0.5))
        x1, y1 = x0 + tl, y0 + tw
        parts = [_box(rng, dens, (x0, y0, th - 0.04), (x1, y1, th))]
        for lx in (x0 + 0.04, x1 - 0.09):
            for ly in (y0 + 0.04, y1 - 0.09):
                parts.append(solid_box((lx, ly, 0.0), (lx + 0.05, ly + 0.05, th - 0.04),
                                       top=False))
        table_tops.append(((x0, y0, th), (x1, y1, th)))
        add("table", parts)
        # chairs: along every side, seat front pushed up to (or under) the table edge
        sides = []
        for along_x, edge, outward, a0, a1 in ((True, y0, -1, x0, x1), (True, y1, 1, x0, x1),
                                              (False, x0, -1, y0, y1), (False, x1, 1, y0, y1)):
            slots = int((a1 - a0) // 0.65)
            for j in range(slots):
                if rng.random() < (0.85 if big else 0.5):
                    c = a0 + (a1 - a0) * (j + 0.5) / slots + rng.uniform(-0.08, 0.08)
                    sides.append((along_x, edge, outward, c))
        if not sides:   # every table gets at least one chair
            sides.append((True, y0, -1, (x0 + x1) / 2))
        for along_x, edge, outward, c in sides:
            sw, sh = rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
            front = edge - outward * rng.uniform(0.0, 0.12)   # touching or under the table
            back = front + outward * sw
            n0, n1 = sorted((front, back))
            if along_x:
                seat = ((c - sw / 2, n0, sh - 0.05), (c + sw / 2, n1, sh))
            else:
                seat = ((n0, c - sw / 2, sh - 0.05), (n1, c + sw / 2, sh))
            lo, hi = np.array(seat[0]), np.array(seat[1])
            if lo[0] < 0.02 or lo[1] < 0.02 or hi[0] > length - 0.02 or hi[1] > width - 0.02:
                continue
            parts = [_box(rng, dens, lo, hi)]
            ax = 1 if along_x else 0
            blo, bhi = lo.copy(), hi.copy()
            if outward > 0:
                blo[ax] = hi[ax] - 0.05
            else:
                bhi[ax] = lo[ax] + 0.05
            blo[2], bhi[2] = sh, sh + rng.uniform(0.35, 0.5)
            parts.append(_box(rng, dens, blo, bhi))
            for lx in (lo[0] + 0.02, hi[0] - 0.05):
                for ly in (lo[1] + 0.02, hi[1] - 0.05):
                    parts.append(solid_box((lx, ly, 0.0), (lx + 0.03, ly + 0.03, sh - 0.05),
                                           top=False))
            add("chair", parts)

    # --- clutter: small boxes on tables, on bookcases and on the floor, often in touching piles
    n_clutter = {"storage": count(6, 12), "hallway": count(1, 4)}.get(kind, count(3, 9))
    for _ in range(n_clutter):
        sx, sy, sz = rng.uniform(0.08, 0.5), rng.uniform(0.08, 0.5), rng.uniform(0.04, 0.4)
        where = rng.random()
        if table_tops and where < 0.5:
            (x0, y0, z), (x1, y1, _) = table_tops[int(rng.integers(len(table_tops)))]
        elif shelf_tops and where < 0.75:
            lo, hi = shelf_tops[int(rng.integers(len(shelf_tops)))]
            (x0, y0, z), (x1, y1) = lo[:2].tolist() + [hi[2]], hi[:2]
            sz = min(sz, height - z - 0.05)
        else:
            for _ in range(20):   # on the floor, mostly along the walls
                x0, y0 = rng.uniform(0.0, length - sx), rng.uniform(0.0, width - sy)
                if rng.random() < 0.7:
                    if rng.random() < 0.5:
                        x0 = 0.0 if rng.random() < 0.5 else length - sx
                    else:
                        y0 = 0.0 if rng.random() < 0.5 else width - sy
                if floor.free((x0, y0), (x0 + sx, y0 + sy)):
                    break
            else:
                continue
            floor.take((x0, y0), (x0 + sx, y0 + sy))
            x1, y1, z = x0 + sx, y0 + sy, 0.0
        sx, sy = min(sx, x1 - x0), min(sy, y1 - y0)
        if sz < 0.03:
            continue
        cx, cy = rng.uniform(x0, max(x0, x1 - sx)), rng.uniform(y0, max(y0, y1 - sy))
        parts = [solid_box((cx, cy, z), (cx + sx, cy + sy, z + sz), bottom=False)]
        if rng.random() < 0.3:   # a second item stacked on top (same instance)
            tx, ty = sx * rng.uniform(0.4, 0.9), sy * rng.uniform(0.4, 0.9)
            tz = min(rng.uniform(0.03, 0.2), height - z - sz - 0.05)
            if tz > 0.02:
                parts.append(_box(rng, dens, (cx, cy, z + sz), (cx + tx, cy + ty, z + sz + tz),
                                  bottom=False))
        add("clutter", parts)

    # --- room shell; points hidden behind furniture or inside openings are left out
    shell = [("ceiling", _rect(rng, dens, (0, 0, height), (length, 0, 0), (0, width, 0))),
             ("floor", _rect(rng, dens, (0, 0, 0), (length, 0, 0), (0, width, 0)))]
    for w in range(4):
        p0 = walls.origin[w]
        pts = _rect(rng, dens, (*p0, 0.0), (*(walls.length[w] * walls.t[w]), 0.0),
                    (0, 0, height))
        shell.append(("wall", pts[~_inside(pts, holes)]))
    shell = [(cls, pts[~_inside(pts, solids, margin=0.015)]) for cls, pts in shell]

    # --- objects: drop faces pressed against the shell (they cannot be seen)
    eps = 0.01
    limit_lo, limit_hi = np.array([eps, eps, eps]), np.array([length - eps, width - eps,
                                                             height - eps])
    kept = []
    for cls, pts in objects:
        if cls not in ("door", "window", "board"):
            pts = pts[np.all((pts > limit_lo) & (pts < limit_hi), axis=1)]
        kept.append((cls, pts))
    instances = shell + kept

    # --- scanner: density falls off with distance to the nearest of 1..3 scan positions
    scanners = np.stack([rng.uniform(0.3, length - 0.3, 3), rng.uniform(0.3, width - 0.3, 3),
                         rng.uniform(1.2, 1.8, 3)], axis=1)[:count(1, 3)]
    d0 = rng.uniform(2.5, 4.0)
    out_xyz, out_rgb, out_sem, out_ins = [], [], [], []
    ins_id = 0
    for cls, pts in instances:
        if len(pts):
            dist = np.min(np.linalg.norm(pts[:, None, :] - scanners[None], axis=2), axis=1)
            keep = rng.random(len(pts)) < np.maximum(1.0 / (1.0 + (dist / d0) ** 2), 0.12)
            pts = pts[keep]
        if len(pts) < 10:   # too few points to make an instance (a hidden or tiny object)
            continue
        pts = pts + rng.normal(0.0, NOISE_SIGMA, pts.shape)
        base = (np.array(rng.integers(40, 220, 3)) if cls == "clutter"
                else np.array(_BASE_RGB[cls], float))
        base = base * rng.uniform(0.85, 1.12) + rng.normal(0.0, 6.0, 3)
        dist = np.min(np.linalg.norm(pts[:, None, :] - scanners[None], axis=2), axis=1)
        shade = 1.0 - 0.04 * dist[:, None]   # a little darker far from the scanner
        rgb = base * shade + rng.normal(0.0, 7.0, (len(pts), 3))
        out_xyz.append(pts)
        out_rgb.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        out_sem.append(np.full(len(pts), cls, dtype="<U8"))
        out_ins.append(np.full(len(pts), ins_id, dtype=np.int32))
        ins_id += 1
    xyz = np.round(np.concatenate(out_xyz) + np.asarray(origin, float), 3)
    return Room(xyz, np.concatenate(out_rgb), np.concatenate(out_sem), np.concatenate(out_ins))


# ----------------------------------------------------------------------------------------------
# Writing


def _format_points(xyz, rgb):
    """`X Y Z R G B` lines, coordinates with 3 decimals, as in S3DIS."""
    if len(xyz) == 0:
        return ""
    line = "%.3f %.3f %.3f %d %d %d\n"
    rows = np.empty((len(xyz), 6), dtype=object)
    rows[:, :3] = xyz.tolist()
    rows[:, 3:] = rgb.astype(np.int64).tolist()
    return (line * len(xyz)) % tuple(rows.ravel().tolist())


def annotation_names(room):
    """Names `<class>_<i>` of the room's instances, in instance-id order."""
    first = np.unique(room.instance, return_index=True)[1]
    counts, names = {}, []
    for cls in room.semantic[first]:
        counts[cls] = counts.get(cls, 0) + 1
        names.append(f"{cls}_{counts[cls]}")
    return names


def _write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_room(room, room_dir):
    """Writes `room_dir/<room>.txt` and `room_dir/Annotations/<class>_<i>.txt`."""
    name = os.path.basename(os.path.normpath(room_dir))
    ann = os.path.join(room_dir, "Annotations")
    os.makedirs(ann, exist_ok=True)
    bounds = np.flatnonzero(np.diff(room.instance)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(room.instance)]
    texts = []
    for ann_name, s, e in zip(annotation_names(room), starts, ends):
        text = _format_points(room.xyz[s:e], room.rgb[s:e])
        _write_file(os.path.join(ann, ann_name + ".txt"), text)
        texts.append(text)
    _write_file(os.path.join(room_dir, name + ".txt"), "".join(texts))


def plan(seed=0, areas=6, rooms_per_area=2):
    """[(area, room index, name, size, origin)] for every room; depends only on the arguments."""
    rooms = []
    for area in range(1, areas + 1):
        arng = np.random.default_rng([seed, area])
        kinds = ["office"] + list(arng.choice(ROOM_TYPES, rooms_per_area - 1, p=_TYPE_WEIGHTS))
        counts, x = {}, float(arng.uniform(-20.0, 20.0))
        y, z = float(arng.uniform(-20.0, 20.0)), float(arng.uniform(-1.0, 1.0))
        for i, kind in enumerate(kinds[:rooms_per_area]):
            counts[kind] = counts.get(kind, 0) + 1
            size = _draw_size(arng, kind)
            rooms.append((area, i, f"{kind}_{counts[kind]}", size, (x, y, z)))
            x += size[0] + 0.3   # rooms side by side with a 30 cm wall between them
    return rooms


def generate(out_dir, seed=0, areas=6, rooms_per_area=2, points_per_m2=DEFAULT_POINTS_PER_M2,
             overwrite=False, verbose=False):
    """Writes a synthetic S3DIS under out_dir; existing rooms are kept unless overwrite.

    Returns a summary dict: rooms (all), written, skipped, points (in the rooms written),
    seconds, out.
    """
    start = time.time()
    os.makedirs(out_dir, exist_ok=True)
    tmp_root = os.path.join(out_dir, _TMP_DIR)
    shutil.rmtree(tmp_root, ignore_errors=True)   # left by an interrupted run
    written = skipped = points = 0
    rooms = plan(seed, areas, rooms_per_area)
    for area, index, name, size, origin in rooms:
        final = os.path.join(out_dir, f"Area_{area}", name)
        if os.path.isdir(final) and not overwrite:
            skipped += 1
            continue
        room = make_room(np.random.default_rng([seed, area, index, 1]), name, points_per_m2,
                         size=size, origin=origin)
        tmp = os.path.join(tmp_root, f"Area_{area}", name)
        shutil.rmtree(tmp, ignore_errors=True)
        write_room(room, tmp)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isdir(final):
            old = tmp + ".old"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        written += 1
        points += len(room.xyz)
        if verbose:
            print(f"Area_{area}/{name}: {len(room.xyz)} points, "
                  f"{room.instance.max() + 1} instances", flush=True)
    shutil.rmtree(tmp_root, ignore_errors=True)
    return {"rooms": len(rooms), "written": written, "skipped": skipped, "points": points,
            "seconds": time.time() - start, "out": out_dir}


def _main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    s = generate(f.out, seed=f.seed, areas=f.areas, rooms_per_area=f.rooms_per_area,
                 points_per_m2=f.points_per_m2, overwrite=f.overwrite, verbose=True)
    print(f"{s['rooms']} rooms ({s['written']} written, {s['skipped']} already there), "
          f"{s['points']} points written, {s['seconds']:.1f} s -> {s['out']}")


def _define_flags():
    from absl import flags

    flags.DEFINE_string("out", None, "Output folder; Area_1..Area_N are written inside it "
                        "(the raw Stanford3dDataset_v1.2 layout).")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed and sizes give the same files.")
    flags.DEFINE_integer("areas", 6, "Number of areas (Area_1..Area_N).", lower_bound=1)
    flags.DEFINE_integer("rooms_per_area", 2, "Rooms in each area.", lower_bound=1)
    flags.DEFINE_float("points_per_m2", DEFAULT_POINTS_PER_M2,
                       "Surface sampling density (points per square metre) next to a scanner; "
                       "it falls off with distance.", lower_bound=1.0)
    flags.DEFINE_bool("overwrite", False, "Regenerate rooms that already exist (by default "
                      "they are skipped, so an interrupted run can be resumed).")
    flags.mark_flag_as_required("out")


def cli():
    """The `jsnet-synthetic` console script (also `python -m jsnet_tf.data.synthetic`)."""
    from jsnet_tf.cli import run_program

    run_program(_main, __name__, _define_flags)


if __name__ == "__main__":
    cli()
