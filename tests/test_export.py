"""`python -m jsnet_tf.export`: a SavedModel that stock TensorFlow (Serving) runs without our op
library and that reproduces the Keras model; the README's REST and gRPC requests.

One export (through the command line, with JSNET_OPS=custom around it, so a trace outside the
pure-TF twins would leave library ops in the graph) serves the whole module; one fresh Python
process, which never imports jsnet_tf, loads it, walks its graph and runs the requests.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zlib

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import checkpoints, config, export, ops
from jsnet_tf.model import build_model
from tests.conftest import BASE_SEED

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OVERRIDES = ["data.num_points=256", "model.npoints=[128, 64, 32, 16]"]
MODEL_NAME = "jsnet"


# ------------------------------------------------------------ the client code of the README


def rest_body(points):
    """The JSON body of a REST predict request (POST /v1/models/jsnet:predict)."""
    return json.dumps({"signature_name": "serving_default", "instances": points.tolist()})


def predict_request(points, model_name=MODEL_NAME):
    """A gRPC PredictRequest for PredictionService/Predict."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(points))
    return request


# ------------------------------------------------------------------------------- fixtures


def blocks(rng, batch, num_points):
    """Points laid out like S3DIS blocks: block-centred xy, z, rgb / 255, room-normalised xyz.

    xyz lies on a 1/64 grid, so float32 distances are exact: the eager model and the SavedModel's
    graph (which may compute distances in another order) pick the same neighbours, instead of
    splitting a near-tie differently and moving a few points' outputs by 1e-3 (seen once)."""
    xyz = np.round(rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 3.0], (batch, num_points, 3)) * 64) / 64
    rgb = rng.uniform(0, 1, (batch, num_points, 3))
    room = rng.uniform(0, 1, (batch, num_points, 3))
    return np.concatenate([xyz, rgb, room], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def module_rng():
    return np.random.default_rng([BASE_SEED, zlib.crc32(b"tests/test_export.py")])


@pytest.fixture(scope="module")
def cfg():
    return config.load(None, OVERRIDES)


@pytest.fixture(scope="module")
def run(cfg, module_rng, tmp_path_factory):
    """(run folder, model): a model whose moving statistics come from one training-mode pass (the
    zero-initialised ones of a never-trained network overflow in inference), saved as a run."""
    tf.keras.utils.set_random_seed(int(module_rng.integers(2**31)))
    model = build_model(cfg)
    model.build((None, 256, 9))
    model.set_bn_decay(0.0)  # moving statistics := this batch's
    model(blocks(module_rng, 4, 256), training=True)
    run_dir = tmp_path_factory.mktemp("run")
    checkpoints.write_run_files(run_dir, cfg)
    checkpoints.save_weights(model, run_dir / "weights")
    return run_dir, model


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """<out>/1 written by the command line."""
    out = tmp_path_factory.mktemp("served") / "jsnet"
    env = {**os.environ, "JSNET_OPS": "custom", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "jsnet_tf.export", "--workdir", str(run[0]), "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"-> {out / '1'}" in result.stdout
    return out / "1"


@pytest.fixture(scope="module")
def inputs(module_rng):
    """A REST body (batch 2 of the training size) and a batch of another size (300 points)."""
    return {"rest": blocks(module_rng, 2, 256), "other": blocks(module_rng, 1, 300)}


@pytest.fixture(scope="module")
def expected(run, inputs):
    """The Keras model's outputs for the inputs (pure-TF ops, eager)."""
    with ops.use_implementation("reference"):
        outputs = {name: run[1](points, training=False) for name, points in inputs.items()}
    return {name: {key: value.numpy() for key, value in out.items()} for name, out in outputs.items()}


FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

export_dir, body_path, other_path, out_path, min_points = sys.argv[1:]
saved = saved_model_pb2.SavedModel()
with open(export_dir + "/saved_model.pb", "rb") as f:
    saved.ParseFromString(f.read())
graphs = [meta.graph_def for meta in saved.meta_graphs]
op_types = {n.op for g in graphs for n in g.node}
op_types |= {n.op for g in graphs for f in g.library.function for n in f.node_def}

serve = tf.saved_model.load(export_dir).signatures["serving_default"]
with open(body_path) as f:
    feeds = {"rest": np.asarray(json.load(f)["instances"], np.float32), "other": np.load(other_path)}
outputs = {}
for name, points in feeds.items():
    outputs.update({f"{name}/{key}": value.numpy() for key, value in serve(points=points).items()})
np.savez(out_path, **outputs)
try:
    serve(points=tf.zeros([1, int(min_points) - 1, feeds["other"].shape[2]]))
    too_few = None
except tf.errors.InvalidArgumentError as error:
    too_few = error.message
with open("/proc/self/maps") as f:
    mapped = "libjsnet_ops" in f.read()
print(json.dumps({
    "op_types": sorted(op_types),
    "unregistered": sorted(t for t in op_types if op_def_registry.get(t) is None),
    "jsnet_modules": sorted(m for m in sys.modules if m.startswith("jsnet")),
    "library_mapped": mapped,
    "input": serve.structured_input_signature[1]["points"].shape.as_list(),
    "too_few": too_few,
}))
"""


@pytest.fixture(scope="module")
def fresh(exported, inputs, cfg, tmp_path_factory):
    """What a Python process that never loads jsnet_tf (nor our op library) sees of the export."""
    folder = tmp_path_factory.mktemp("fresh")
    (folder / "body.json").write_text(rest_body(inputs["rest"]))
    np.save(folder / "other.npy", inputs["other"])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JSNET_OPS")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(exported), "body.json", "other.npy", "outputs.npz",
         str(cfg["model"]["npoints"][0])],
        cwd=folder, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(folder / "outputs.npz") as outputs:
        report["outputs"] = dict(outputs)
    return report


# ---------------------------------------------------------------------------------- tests


def test_the_version_folder_holds_a_saved_model_and_the_client_facts(exported, cfg):
    assert sorted(p.name for p in exported.parent.iterdir()) == ["1"]  # no temporary folder left
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    assert config.load(exported / "assets.extra" / "jsnet_config.toml") == cfg
    facts = json.loads((exported / "assets.extra" / "jsnet_serving.json").read_text())
    assert facts["signature"] == "serving_default" and facts["input"]["name"] == "points"
    assert facts["input"]["shape"] == [None, None, 9] and len(facts["input"]["channels"]) == 9
    assert (facts["input"]["num_points"], facts["input"]["min_points"], facts["input"]["block_size"]) == (256, 128, 1.0)
    assert facts["class_names"][:3] == ["ceiling", "floor", "wall"] and len(facts["class_names"]) == 13
    assert list(facts["outputs"]) == list(export.OUTPUT_NAMES)
    assert "/weights/" in facts["checkpoint"]


@pytest.mark.slow
def test_saved_model_cli_lists_the_signature(exported):
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    assert cli.exists(), f"{cli}: tensorflow's console script is missing"
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    signature = result.stdout.split("signature_def['serving_default']:")[1].split("signature_def[")[0]
    inputs, outputs = signature.split("following output(s):")
    assert "inputs['points'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, 9)" in inputs
    listed = {
        "semantic_logits": ("DT_FLOAT", "(-1, -1, 13)"),
        "semantic_probabilities": ("DT_FLOAT", "(-1, -1, 13)"),
        "semantic_labels": ("DT_INT32", "(-1, -1)"),
        "embeddings": ("DT_FLOAT", "(-1, -1, 5)"),
    }
    for name, (dtype, shape) in listed.items():
        assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}" in outputs
    assert "Method name is: tensorflow/serving/predict" in signature


@pytest.mark.slow
def test_the_graph_holds_only_builtin_ops_and_no_op_library(fresh, exported):
    op_types = set(fresh["op_types"])
    assert {"TopKV2", "GatherV2", "StatelessWhile"} <= op_types  # the walk reached the nested functions
    assert fresh["unregistered"] == []
    assert not [t for t in op_types if t.startswith("Jsnet")]
    assert not [t for t in op_types if "Random" in t or "Dropout" in t]  # inference mode: no dropout
    assert fresh["jsnet_modules"] == [] and fresh["library_mapped"] is False
    assert export.graph_op_types(exported) == op_types


@pytest.mark.slow
def test_a_fresh_process_reproduces_the_keras_outputs(fresh, expected, inputs):
    assert fresh["input"] == [None, None, 9]
    for name, points in inputs.items():
        got = {key: fresh["outputs"][f"{name}/{key}"] for key in export.OUTPUT_NAMES}
        want = expected[name]
        for key in ("semantic_logits", "embeddings"):
            assert got[key].shape == want[key].shape == points.shape[:2] + want[key].shape[2:]
            scale = np.abs(want[key]).max()
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name}/{key}")


@pytest.mark.slow
def test_probabilities_and_labels_follow_the_logits(fresh):
    logits = fresh["outputs"]["rest/semantic_logits"].astype(np.float64)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    np.testing.assert_allclose(fresh["outputs"]["rest/semantic_probabilities"], softmax, atol=1e-6)
    labels = fresh["outputs"]["rest/semantic_labels"]
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, fresh["outputs"]["rest/semantic_logits"].argmax(-1))


@pytest.mark.slow
def test_fewer_points_than_the_first_level_samples_is_a_clear_error(fresh):
    assert "farthest_point_sample: npoint (128) exceeds the number of points N of xyz" in fresh["too_few"]


def test_rest_body_round_trips_the_points(inputs):
    body = json.loads(rest_body(inputs["rest"]))
    assert body["signature_name"] == "serving_default"
    points = np.asarray(body["instances"], np.float32)
    assert points.shape == (2, 256, 9)
    np.testing.assert_array_equal(points, inputs["rest"])


def test_grpc_predict_request_round_trips_the_points(inputs):
    pytest.importorskip("tensorflow_serving.apis", reason="tensorflow-serving-api not installed")
    from tensorflow_serving.apis import predict_pb2

    sent = predict_request(inputs["other"])
    request = predict_pb2.PredictRequest.FromString(sent.SerializeToString())
    assert (request.model_spec.name, request.model_spec.signature_name) == (MODEL_NAME, "serving_default")
    assert list(request.inputs) == ["points"]
    points = tf.make_ndarray(request.inputs["points"])
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, inputs["other"])


def test_foreign_ops_are_those_of_our_library_or_unknown_to_tensorflow():
    found = export.foreign_ops({"MatMul", "TopKV2", "JsnetKnnPoint", "NoSuchOpAnywhere"})
    assert found == ["JsnetKnnPoint", "NoSuchOpAnywhere"]


def test_an_existing_version_is_refused_before_anything_is_loaded(exported, tmp_path):
    with pytest.raises(export.ExportError, match=r"1 already exists; pass --overwrite"):
        export.export_run(tmp_path / "no_such_run", exported.parent, version=1)
    with pytest.raises(export.ExportError, match="version must be a positive integer"):
        export.export_run(tmp_path / "no_such_run", tmp_path / "out", version=0)


def test_a_graph_with_foreign_ops_is_refused_and_leaves_nothing(cfg, tmp_path, monkeypatch):
    class Stub:
        variables = ()

    identity = tf.function(lambda points: {"semantic_logits": points})
    traced = identity.get_concrete_function(tf.TensorSpec([None, None, 9]))
    monkeypatch.setattr(export, "trace_serving_function", lambda model: traced)
    monkeypatch.setattr(export, "foreign_ops", lambda op_types: ["JsnetKnnPoint"])
    with pytest.raises(export.ExportError, match="holds ops stock TensorFlow cannot run: JsnetKnnPoint"):
        export.export_model(Stub(), cfg, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_overwrite_replaces_only_its_version(run, exported, tmp_path):
    out = tmp_path / "jsnet"
    shutil.copytree(exported.parent, out)
    (out / "1" / "stale.txt").write_text("from the previous export")
    (out / "7").mkdir()
    target = export.export_run(run[0], out, version=1, overwrite=True)
    assert target == out / "1" and not (target / "stale.txt").exists()
    assert (target / "saved_model.pb").is_file() and (out / "7").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["1", "7"]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jsnet_tf.export", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_help_explains_every_flag():
    result = _cli("--helpshort")
    for flag in ("--workdir", "--out", "--version", "--which", "--[no]overwrite"):
        assert flag in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_run_without_weights_is_one_clear_line(cfg, tmp_path):
    checkpoints.write_run_files(tmp_path, cfg)
    result = _cli("--workdir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"jsnet_tf.export: error: {tmp_path} holds no weights")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------- a real TF Serving, where installed


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_available(server, rest_port, log, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"tensorflow_model_server exited: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}", timeout=5) as reply:
                states = [v["state"] for v in json.load(reply)["model_version_status"]]
            if "AVAILABLE" in states:
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the model did not become available in {timeout} s: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_tensorflow_model_server_serves_the_export(exported, inputs, expected, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (TF Serving's binary: its apt repository or Docker image)")
    grpc_port, rest_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_name={MODEL_NAME}",
             f"--model_base_path={exported.parent}"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_available(server, rest_port, log)
        http = urllib.request.Request(
            f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}:predict",
            data=rest_body(inputs["rest"]).encode(), headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(http, timeout=120) as reply:
            predictions = json.load(reply)["predictions"]
        logits = np.asarray([p["semantic_logits"] for p in predictions], np.float32)
        want = expected["rest"]["semantic_logits"]
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())

        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_request(inputs["other"]), timeout=120)
        embeddings = tf.make_ndarray(response.outputs["embeddings"])
        want = expected["other"]["embeddings"]
        np.testing.assert_allclose(embeddings, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    finally:
        server.terminate()
        server.wait(timeout=60)
