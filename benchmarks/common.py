"""Pieces every benchmark script shares: logging, the report's machine header, writing the report."""

import datetime
import json
import os
import pathlib
import platform
import sys
import time


def log(text):
    print(text, file=sys.stderr, flush=True)


def machine(tf, date=None):
    """When and where a report was measured."""
    date = date or datetime.datetime.now(datetime.UTC)
    return {
        "date": date.isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def interleaved_samples(calls, number, repeats):
    """{name: `repeats` seconds-per-call samples} of the callables `calls[name]` named in `number`:
    each sample runs its callable number[name] times back to back, and the order of the callables
    rotates every repetition, so that a change of load on the machine hits them all alike."""
    names = list(number)
    samples = {name: [] for name in names}
    for rep in range(repeats):
        shift = rep % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            call, count = calls[name], number[name]
            start = time.perf_counter()
            for _ in range(count):
                call()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def write_report(path, report):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {path}")
