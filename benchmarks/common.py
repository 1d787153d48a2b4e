"""Pieces every benchmark script shares: logging, the report's machine header, writing the report."""

import datetime
import json
import os
import pathlib
import platform
import sys


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


def write_report(path, report):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {path}")
