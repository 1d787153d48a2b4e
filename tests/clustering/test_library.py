"""The extension's build bookkeeping: a missing or stale extension is refused with the build
command; building is a no-op when the extension is current."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from jsnet_tf.clustering import build, library

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_loader(monkeypatch):
    """library.load() as in a new process (no cached module or failure)."""
    monkeypatch.setattr(library, "_module", None)
    monkeypatch.setattr(library, "_failure", None)


def test_current_extension_loads(fresh_loader):
    assert library.problem() is None
    assert hasattr(library.load(), "mean_shift")


def test_missing_extension_names_the_build_command(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setattr(library, "LIB_PATH", tmp_path / "missing.so")
    with pytest.raises(library.ExtensionError, match="not built.*python -m jsnet_tf.clustering.build"):
        library.load()


def test_changed_sources_make_it_stale(fresh_loader, monkeypatch, tmp_path):
    shutil.copytree(library.SOURCE_DIR, tmp_path / "src")
    (tmp_path / "src" / "clustering.cc").write_text((library.SOURCE_DIR / "clustering.cc").read_text() + "\n// edit\n")
    monkeypatch.setattr(library, "SOURCE_DIR", tmp_path / "src")
    with pytest.raises(library.ExtensionError, match="stale.*python -m jsnet_tf.clustering.build"):
        library.load()


def test_missing_build_info_is_refused(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setattr(library, "INFO_PATH", tmp_path / "build_info.json")
    with pytest.raises(library.ExtensionError, match="missing or unreadable"):
        library.load()


def test_using_the_package_without_the_extension_raises_import_error():
    code = (
        "import jsnet_tf.clustering as c, jsnet_tf.clustering.library as l\n"
        "l.LIB_PATH = l.LIB_DIR / 'missing.so'\n"
        "try:\n"
        "    c.mean_shift\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert result.stdout.startswith("ExtensionError"), result.stderr
    assert "python -m jsnet_tf.clustering.build" in result.stdout


def test_build_is_a_no_op_when_current(capsys):
    before = library.LIB_PATH.stat().st_mtime_ns
    assert build.build() == library.LIB_PATH
    assert "up to date" in capsys.readouterr().out
    assert library.LIB_PATH.stat().st_mtime_ns == before
