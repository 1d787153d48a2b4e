"""Seconds per named stage of long work (evaluation: reading, blocks, network, mean-shift, merging,
files), and the table `evaluate.py` prints of them.

Stages may run at the same time (the network's next batch runs while the previous block is
clustered), so a stage's seconds are the time it was busy, and the stages of a room can add up to
more than the room's wall-clock seconds.
"""

import contextlib
import threading
import time

# The order stages are reported in; any other name follows them.
STAGES = ("reading", "blocks", "network", "mean-shift", "merging", "files")


class StageTimer:
    """Accumulates seconds per stage; safe to use from several threads."""

    def __init__(self):
        self._seconds = {}
        self._lock = threading.Lock()

    def add(self, stage, seconds):
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + float(seconds)

    @contextlib.contextmanager
    def stage(self, name):
        """Times the `with` body as stage `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def seconds(self):
        """{stage: seconds}, in the STAGES order."""
        with self._lock:
            return {name: self._seconds[name] for name in _ordered(self._seconds)}


def _ordered(names):
    return sorted(names, key=lambda n: (STAGES.index(n) if n in STAGES else len(STAGES), n))


def null_stage(_name):
    """A stand-in for StageTimer.stage when nothing is timed."""
    return contextlib.nullcontext()


def summarise(rooms):
    """The `timing` record of results.json from {room: {"points", "seconds", "stages"}}: per room
    its points per second, and over all rooms the seconds per stage and the points per second."""
    per_room, totals = {}, {}
    points = seconds = 0.0
    for name, room in rooms.items():
        per_room[name] = {
            "points": int(room["points"]),
            "seconds": round(room["seconds"], 3),
            "points_per_second": round(room["points"] / room["seconds"], 1) if room["seconds"] > 0 else None,
            "stages": {stage: round(s, 3) for stage, s in room["stages"].items()},
        }
        points += room["points"]
        seconds += room["seconds"]
        for stage, s in room["stages"].items():
            totals[stage] = totals.get(stage, 0.0) + s
    return {
        "points": int(points),
        "seconds": round(seconds, 3),
        "points_per_second": round(points / seconds, 1) if seconds > 0 else None,
        "stages": {stage: round(totals[stage], 3) for stage in _ordered(totals)},
        "rooms": per_room,
    }


def format_summary(timing):
    """The stage table of a `summarise` record, as printed at the end of an evaluation."""
    total = timing["seconds"]
    lines = [f"time per stage over {len(timing['rooms'])} rooms ({timing['points']} points, {total:.1f} s of room time, "
             "stages overlap):"]
    for stage, seconds in timing["stages"].items():
        share = f"{100 * seconds / total:5.1f}%" if total > 0 else "    -"
        lines.append(f"  {stage:<11} {seconds:9.2f} s  {share}")
    rates = [room["points_per_second"] for room in timing["rooms"].values() if room["points_per_second"]]
    if rates:
        lines.append(f"points per second: {timing['points_per_second']:.0f} over all rooms; per room "
                     f"{min(rates):.0f} to {max(rates):.0f}")
    return "\n".join(lines)
