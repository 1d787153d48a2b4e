"""The op library is refused, with a message saying how to rebuild, when it does not match."""

import json
import pathlib
import subprocess
import sys

import pytest

from jsnet_tf.ops import library

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_library(monkeypatch, tmp_path):
    """A library folder whose build_info the test can edit, and sources it can change."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libjsnet_ops.so").write_bytes(b"not loaded by these tests")
    sources = tmp_path / "src"
    sources.mkdir()
    for name in library.SOURCE_FILES:
        (sources / name).write_text(f"// {name}\n")
    monkeypatch.setattr(library, "LIB_PATH", lib / "libjsnet_ops.so")
    monkeypatch.setattr(library, "INFO_PATH", lib / "build_info.json")
    monkeypatch.setattr(library, "SOURCE_DIR", sources)
    monkeypatch.setattr(library, "_module", None)
    monkeypatch.setattr(library, "_failure", None)
    info = {"tf_version": library.tf_version_key(), "source_digest": library.source_digest(sources)}
    (lib / "build_info.json").write_text(json.dumps(info))
    return lib, sources


def test_current_library_has_no_problem(fake_library):
    assert library.problem() is None


def test_library_of_another_tensorflow_is_refused(fake_library):
    lib, _ = fake_library
    info = json.loads((lib / "build_info.json").read_text())
    (lib / "build_info.json").write_text(json.dumps({**info, "tf_version": "2.15"}))
    with pytest.raises(library.OpLibraryError, match=r"built for TensorFlow 2\.15 .* rebuild it"):
        library.load()


def test_changed_sources_make_the_library_stale(fake_library):
    _, sources = fake_library
    (sources / "point_kernels.cc").write_text("// edited\n")
    with pytest.raises(library.OpLibraryError, match=r"stale: the sources .* changed"):
        library.load()


def test_missing_build_info_is_refused(fake_library):
    lib, _ = fake_library
    (lib / "build_info.json").unlink()
    assert "cannot be trusted" in library.problem()


def test_build_script_does_nothing_when_current():
    library.load()  # built by `make build`
    before = library.LIB_PATH.stat().st_mtime_ns
    result = subprocess.run([sys.executable, "tf_ops/build.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "is up to date" in result.stdout
    assert library.LIB_PATH.stat().st_mtime_ns == before
