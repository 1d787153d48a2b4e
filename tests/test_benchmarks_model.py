"""benchmarks/model.py's measuring helpers: the FLOP counter gives the hand-computed count of a dense
layer and a convolution, the fp32 peak follows the CPU flags and clock, the profiler trace finds the ops
that ran, ops are grouped by JSNet layer, and oneDNN's verbose lines are summed per primitive."""

import importlib.util
import pathlib

import pytest
import tensorflow as tf

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # model.py imports benchmarks/common.py
    spec = importlib.util.spec_from_file_location("benchmark_model", BENCHMARKS / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines no flags: those are defined when it runs as a script
    return module


def test_flops_of_dense_and_conv2d_are_the_hand_count(bench):
    import keras

    m, k, n = 7, 5, 3
    dense = keras.layers.Dense(n)
    h, w, c_in, c_out, kh, kw = 6, 5, 4, 2, 3, 2
    kernel = tf.random.normal((kh, kw, c_in, c_out))

    @tf.function
    def f(x, image):
        return dense(x), tf.nn.conv2d(image, kernel, strides=1, padding="VALID")

    graph = f.get_concrete_function(tf.TensorSpec((m, k)), tf.TensorSpec((1, h, w, c_in))).graph
    flops = bench.graph_flops(tf, graph)
    conv = 2 * (h - kh + 1) * (w - kw + 1) * c_out * kh * kw * c_in
    assert sum(flops.values()) == 2 * m * k * n + m * n + conv  # multiply-adds, the bias add, the convolution
    assert sorted(flops.values()) == sorted([2 * m * k * n, m * n, conv])


def test_fp32_peak_from_cpu_flags_and_clock(bench):
    avx512 = "processor : 0\ncpu MHz : 2100.000\nflags : fpu sse avx avx2 fma avx512f\n" * 2
    peak, how = bench.fp32_peak(avx512, cores=2)
    assert peak == pytest.approx(2 * 16 * 2 * 2 * 2.1)
    assert "avx512f" in how and "2100 MHz" in how
    avx2 = "cpu MHz : 1200.0\nflags : sse avx avx2 fma\ncpu MHz : 2900.0\n"
    assert bench.fp32_peak(avx2, cores=4)[0] == pytest.approx(4 * 8 * 2 * 2 * 2.9)
    assert bench.fp32_peak(avx2, cores=4, max_mhz="3500.0", fma_units=1)[0] == pytest.approx(4 * 8 * 2 * 1 * 3.5)
    assert bench.fp32_peak("flags : sse avx\n", cores=1, max_mhz="1000")[0] == pytest.approx(8 * 1 * 2 * 1.0)
    assert bench.fp32_peak("flags : avx2 fma\n", cores=1)[0] is None


def test_trace_finds_the_matmul_that_ran(bench, tmp_path):
    a, b = tf.random.normal((256, 256)), tf.random.normal((256, 256))
    f = tf.function(lambda x, y: tf.matmul(x, y, name="the_matmul"))
    f(a, b)
    times, wall = bench.trace_op_times(tf, lambda: f(a, b).numpy(), 3, tmp_path)
    matmuls = {key: ps for key, ps in times.items() if key[0].endswith("the_matmul")}
    assert len(matmuls) == 1 and wall > 0
    (name, kind), ps = next(iter(matmuls.items()))
    assert ps > 0 and bench.op_class(kind) == bench.OP_CLASSES[0][0]


def test_op_group_by_jsnet_layer(bench):
    layers = {"layer1": "layer1 (SetAbstraction)", "sem_fa_layer3": "sem_fa_layer3 (DepthwiseDecoding)"}
    assert bench.op_group("jsnet_1/layer1_1/conv0_1/MatMul", layers) == ("layer1 (SetAbstraction)", False)
    assert bench.op_group("gradient_tape/jsnet/sem_fa_layer3_2/conv_0_1/MatMul_1", layers) == (
        "sem_fa_layer3 (DepthwiseDecoding)", True)
    assert bench.op_group("ArithmeticOptimizer/AddOpsRewrite_jsnet_1/layer1_1/add", layers)[0] == "layer1 (SetAbstraction)"
    assert bench.op_group("jsnet_1/JsnetThreeNN", layers)[0] == "jsnet, outside the layers"
    assert bench.op_group("adam/Sub_2", layers)[0] == "optimizer (Adam)"
    assert bench.op_group("SparseSoftmaxCrossEntropyWithLogits/Reshape", layers)[0] == "loss, unscoped ops"


def test_onednn_summary_sums_the_marked_call(bench, tmp_path):
    exec_line = "onednn_verbose,v1,primitive,exec,cpu,inner_product,x64:gemm:jit,forward_training,{},attr-scratchpad:user,,mb8ic3oc32,{}"
    bf16 = "src:bf16::blocked:ab::f0 wei:bf16::blocked:ba::f0 dst:bf16::blocked:ab::f0"
    text = "\n".join([
        exec_line.format(bf16, "9.0"),  # before the mark: not counted
        bench.ONEDNN_MARK,
        exec_line.format(bf16, "1.5"),
        exec_line.format(bf16, "2.0"),
        "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0 wei_f32::blocked:ab:f0,,,8x9:9x32,0.25",
        bench.ONEDNN_END,
        exec_line.format(bf16, "7.0"),
    ])
    path = tmp_path / "stdout.txt"
    path.write_text(text + "\n")
    assert bench.onednn_summary(path) == {"inner_product | x64:gemm:jit | bf16": [2, 3.5], "gemm_api |  | f32": [1, 0.25]}
