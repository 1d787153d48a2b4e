"""The console scripts of pyproject.toml: installed into the environment (editable), each one
runs from any folder and its --help describes its own flags (absl lists only the flags of
`__main__`, which a console script's is not)."""

import pathlib
import subprocess
import sys
import tomllib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# A flag each program must describe in --helpshort.
OWN_FLAG = {
    "jsnet-train": "--workdir", "jsnet-evaluate": "--which", "jsnet-predict": "--category", "jsnet-export": "--out",
    "jsnet-convert": "--mean_ins_size", "jsnet-experiments": "--dry_run", "jsnet-prepare-s3dis": "--num_points",
    "jsnet-prepare-shapenet": "--raw", "jsnet-synthetic": "--rooms_per_area", "jsnet-synthetic-parts": "--points_per_shape",
    "jsnet-prepare-scannet": "--split_dir", "jsnet-synthetic-scannet": "--scenes", "jsnet-doctor": "--repeats",
}


def test_every_entry_point_is_a_console_script():
    assert set(SCRIPTS) == set(OWN_FLAG)
    assert all(target.endswith(":cli") for target in SCRIPTS.values())


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(OWN_FLAG))
def test_each_console_script_helps_from_another_folder(script, tmp_path):
    path = pathlib.Path(sys.executable).parent / script
    assert path.exists(), f"{path}: not installed (make install puts the package into the environment, editable)"
    result = subprocess.run([str(path), "--helpshort"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0  # absl exits 1 after --help, which breaks `jsnet-train --help && ...`
    assert f"{OWN_FLAG[script]}:" in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    doc_line = (result.stdout + result.stderr).strip().splitlines()[0]
    assert "Try --helpfull" not in doc_line and len(doc_line) > 20  # the module's docstring comes first
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_evaluate_and_predict_import_into_one_process_and_share_their_common_flags():
    """No program defines flags at import; the flags several programs take are defined once."""
    code = (
        "import jsnet_tf.evaluate, jsnet_tf.predict, jsnet_tf.train, jsnet_tf.export, jsnet_tf.convert\n"
        "from absl import flags\n"
        "assert 'workdir' not in flags.FLAGS\n"
        "from jsnet_tf import cli\n"
        "cli.define_shared('workdir', 'which')\n"
        "cli.define_shared('workdir', 'which', 'set')\n"
        "print(flags.FLAGS['which'].help)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("weights to load: latest")


@pytest.mark.parametrize("script", ["jsnet-evaluate", "jsnet-export"])
def test_a_user_error_is_one_line_with_status_1(script, tmp_path):
    path = pathlib.Path(sys.executable).parent / script
    result = subprocess.run([str(path), "--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("evaluate.py: error:", "jsnet_tf.export: error:")) and str(tmp_path / "nowhere") in last
