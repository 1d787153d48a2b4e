"""jsnet-doctor: the first command to run on a new machine. Prints what jsnet-tf finds here, one
row each: Python; the TensorFlow build (CPU-only or CUDA, with its CUDA and cuDNN versions); the
GPUs TensorFlow sees; the CPU instruction set the compiled kernels use; the op library (built for
this TensorFlow? from the current sources? with CUDA kernels? is nvcc there to build them?); the
clustering extension; the GPU self-check; then a self-test: every op on every device TensorFlow
sees, compiled and pure-TF, against the float64 NumPy brute force on small inputs, forward and
gradient, timed.

Exits 0 when all is well; otherwise prints one line per problem (`problem: ...`, saying what to do)
and exits 1.

    jsnet-doctor                  # or: make doctor, python -m jsnet_tf.doctor
    jsnet-doctor --noself_test    # the rows only
"""

import dataclasses
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: its INFO lines are no use here

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
TF_WHEELS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu")
REBUILD_CUDA = "python tf_ops/build.py --force --cuda=on"


@dataclasses.dataclass
class Findings:
    """The table's rows (label, value) and the problems found, one line each."""

    rows: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(default_factory=list)

    def add(self, label, value, *problems):
        self.rows.append((label, value))
        self.problems.extend(p for p in problems if p)


@dataclasses.dataclass
class SelfTestLine:
    """One op on one device with one implementation: 'ok', 'FAILED' or a reason it was skipped."""

    implementation: str
    device: str
    op: str
    forward: str
    forward_ms: float | None = None
    gradient: str = "-"
    gradient_ms: float | None = None


def _short(device):
    """'/job:localhost/replica:0/task:0/device:GPU:0' -> 'GPU:0'."""
    return device.rsplit("device:", 1)[-1]


def tensorflow_wheel():
    """The installed TensorFlow distribution's name (tensorflow-cpu, tensorflow, ...)."""
    for name in TF_WHEELS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return name
    return "installed from source"


def package_version():
    """jsnet-tf's installed version (the Makefile installs it, editable)."""
    try:
        return importlib.metadata.version("jsnet-tf")
    except importlib.metadata.PackageNotFoundError:
        return "not installed, run from the sources"


def tensorflow_row(findings):
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if info.get("is_cuda_build"):
        build = f"CUDA build: CUDA {info.get('cuda_version', 'unknown')}, cuDNN {info.get('cudnn_version', 'unknown')}"
    else:
        build = "CPU-only build: no CUDA, no cuDNN"
    findings.add("TensorFlow", f"{tf.__version__} ({tensorflow_wheel()}), {build}")
    return bool(info.get("is_cuda_build"))


def nvidia_smi_gpus():
    """The GPUs the NVIDIA driver lists (`nvidia-smi -L`), or None without a driver."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in out.splitlines() if line.startswith("GPU ")]


def gpu_rows(findings, cuda_build):
    """The GPUs TensorFlow sees: [(name, 'NVIDIA ...', compute capability 'XY' or None)]."""
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        gpus.append((_short(device.name), details.get("device_name", "GPU"), "%d%d" % capability if capability else None))
    if gpus:
        value = f"{len(gpus)}: " + ", ".join(f"{n} {d}" + (f" (sm_{c})" if c else "") for n, d, c in gpus)
        findings.add("GPUs", value)
        return gpus
    driver = nvidia_smi_gpus()
    problem = None
    if driver is None:
        value = "none (no NVIDIA driver: nvidia-smi absent or failing)"
    elif not driver:
        value = "none (nvidia-smi lists none)"
    else:
        value = f"none visible to TensorFlow, though nvidia-smi lists {len(driver)}"
        if cuda_build:
            problem = (f"nvidia-smi lists {len(driver)} GPU(s) but TensorFlow (a CUDA build) uses none: check the driver and "
                       "the CUDA libraries (TensorFlow's start-up log with TF_CPP_MIN_LOG_LEVEL=0 says which failed to load)")
        else:
            problem = (f"nvidia-smi lists {len(driver)} GPU(s) but this TensorFlow is a CPU-only build: install the CUDA one "
                       "(`make build` picks tensorflow[and-cuda] where nvidia-smi works, or `pip install 'tensorflow[and-cuda]==2.21.*'`), "
                       f"then `{REBUILD_CUDA}`")
    findings.add("GPUs", value, problem)
    return gpus


def cpu_flags():
    """The CPU's feature flags and model name from /proc/cpuinfo (empty where there is none)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(), platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return set(fields.get("flags", "").split()), fields.get("model name", platform.machine())


def kernel_isa(machine, flags_found, narrowed=None):
    """The instruction set the CPU kernels run with, chosen as tf_ops/src/point_kernels.cc does at
    load: the widest of AVX-512F, AVX2 and scalar the CPU has (x86-64 only), or narrower where
    JSNET_CPU_ISA asks for it."""
    order = ["scalar", "avx2", "avx512"]
    best = "scalar"
    if machine in ("x86_64", "AMD64"):
        best = "avx512" if "avx512f" in flags_found else "avx2" if "avx2" in flags_found else "scalar"
    if narrowed in order and order.index(narrowed) < order.index(best):
        best = narrowed
    return best


ISA_NAMES = {"scalar": "scalar", "avx2": "AVX2", "avx512": "AVX-512"}


def cpu_row(findings):
    flags_found, model = cpu_flags()
    machine = platform.machine()
    narrowed = os.environ.get("JSNET_CPU_ISA")
    isa = ISA_NAMES[kernel_isa(machine, flags_found, narrowed)]
    if machine in ("x86_64", "AMD64"):
        how = "the kernels carry scalar, AVX2 and AVX-512 paths and take the widest this CPU has"
        if narrowed:
            how += f"; JSNET_CPU_ISA={narrowed} narrows it"
    else:
        how = "portable C++ (the SIMD paths are x86-64 only)"
    findings.add("CPU", f"{isa} kernels on {model} ({machine}, {os.cpu_count()} cores): {how}")


def _cuda_kernels_missing(lib_path, cuda_build, nvcc):
    why = []
    if not cuda_build:
        why.append("install the CUDA build of TensorFlow (`make build` picks it where nvidia-smi works)")
    if not nvcc:
        why.append("install the CUDA toolkit so that nvcc is on PATH (or set CUDA_HOME)")
    first = " and ".join(why) + ", then" if why else "rebuild it:"
    return f"{lib_path} has no CUDA kernels, so the point ops run on the CPU beside the GPUs: {first} `{REBUILD_CUDA}`"


def _sources(library):
    """'from the current sources', or that an installed package has none to compare with."""
    if library.source_digest() is None:
        return f"(its sources, {library.SOURCE_DIR}, are not here to compare with: an installed package)"
    return "from the current sources"


def cuda_kernels_run_on(capability, archs):
    """Whether kernels compiled for the SM versions `archs` ('80', '90', ...) run on a GPU of compute
    capability `capability`: a binary for X.Y runs on X.Z for Z >= Y, and the PTX of the newest
    arch (tf_ops/build.py embeds it) compiles for any newer GPU when loaded."""
    major, minor = divmod(int(capability), 10)
    binary = any(divmod(int(arch), 10)[0] == major and divmod(int(arch), 10)[1] <= minor for arch in archs)
    return binary or max(map(int, archs)) <= int(capability)


def op_library_row(findings, cuda_build, gpus):
    """The op library's state; returns whether its compiled ops can run (and on GPUs too)."""
    from jsnet_tf import native_build
    from jsnet_tf.ops import library

    nvcc = native_build.find_nvcc()
    nvcc_text = f"nvcc: {nvcc}" if nvcc else "nvcc: not found"
    problem = library.problem()
    if problem is None:
        try:
            library.load()
        except library.OpLibraryError as error:
            problem = str(error)
    if problem is not None:
        findings.add("Op library", f"unusable, {library.LIB_PATH} (see the problem below); {nvcc_text}", problem)
        return False, False
    info = library.read_build_info()
    archs = [a.strip() for a in (info.get("cuda_archs") or "").split(",") if a.strip()]
    if info.get("cuda"):
        cuda_text = f"CUDA kernels: yes, sm {', '.join(archs)}"
    else:
        why = "built without them: no nvcc then, or --cuda=off" if cuda_build else "this TensorFlow is a CPU-only build"
        cuda_text = f"CUDA kernels: no ({why})"
    value = (f"ok, {library.LIB_PATH}: built for TensorFlow {info.get('tf_version')} {_sources(library)}; "
             f"{cuda_text}; {nvcc_text}")
    problems = []
    if gpus and not info.get("cuda"):
        problems.append(_cuda_kernels_missing(library.LIB_PATH, cuda_build, nvcc))
    for name, device_name, capability in gpus:
        if info.get("cuda") and capability and archs and not cuda_kernels_run_on(capability, archs):
            problems.append(f"{name} {device_name} (sm_{capability}) is not among the architectures of the CUDA kernels "
                            f"(sm {', '.join(archs)}): rebuild with `JSNET_CUDA_ARCHS={capability} python tf_ops/build.py --force`")
    findings.add("Op library", value, *problems)
    return True, bool(info.get("cuda"))


def clustering_row(findings):
    from jsnet_tf.clustering import library

    problem = library.problem()
    if problem is None:
        try:
            library.load()
        except library.ExtensionError as error:
            problem = str(error)
    if problem is not None:
        findings.add("Clustering", f"unusable, {library.LIB_PATH} (see the problem below)", problem)
        return
    info = library.read_build_info()
    isa = ISA_NAMES.get(library.load().vector_isa(), "portable C++")
    findings.add("Clustering", f"ok, {library.LIB_PATH}: built {_sources(library)} with pybind11 {info.get('pybind11')}, "
                               f"{info.get('compiler')}; mean-shift scans: {isa}")


def self_check_row(findings, cuda_gpus):
    from jsnet_tf.ops import gpu_self_check

    off = f"{gpu_self_check.ENV_VAR}=0 turns it off"
    if not gpu_self_check.enabled():
        state = f"off ({gpu_self_check.ENV_VAR}={os.environ[gpu_self_check.ENV_VAR]})"
    elif cuda_gpus:
        state = f"on: the compiled ops compare each GPU with the CPU kernels the first time they run there ({off})"
    else:
        state = f"on, idle here: no GPU runs the compiled ops ({off})"
    findings.add("GPU self-check", state)


def self_test(devices, implementations, repeats, placed=("compiled",), seed=0):
    """Every op of op_cases on every device with every implementation against the float64 brute
    force: SelfTestLines, the fastest of `repeats` timed runs after the checked one.

    `implementations`: {name: (module of op functions, device -> why it is skipped there or None)};
    the ops of those named in `placed` fail where TensorFlow ran them on another device than asked
    (compiled ops without CUDA kernels run on the CPU)."""
    import numpy as np
    import tensorflow as tf

    from jsnet_tf.ops import op_cases

    lines = []
    for impl_name, (implementation, skip) in implementations.items():
        for device in devices:
            reason = skip(device)
            if reason:
                lines.append(SelfTestLine(impl_name, _short(device), "all ops", f"skipped: {reason}"))
                continue
            rng = np.random.default_rng(seed)
            for case in op_cases.CASES:
                trial = op_cases.draw(case, rng)
                if not hasattr(implementation, case.name):
                    lines.append(SelfTestLine(impl_name, _short(device), case.name, f"skipped: no {impl_name} version"))
                    continue
                line = SelfTestLine(impl_name, _short(device), case.name, "ok")
                try:
                    result = op_cases.run(trial, implementation, device)
                    timed = [op_cases.run(trial, implementation, device) for _ in range(repeats)]
                except tf.errors.OpError as error:
                    line.forward = f"FAILED: raised {type(error).__name__}: {error.message.splitlines()[0]}"
                    lines.append(line)
                    continue
                outputs, grad = op_cases.expected(trial)
                found = op_cases.differences(case, result, outputs, grad)
                if impl_name in placed and _short(result.device) != _short(device):
                    found.append(f"ran on {_short(result.device)} instead (TensorFlow has no kernel of it for {_short(device)})")
                line.forward, line.forward_ms = _verdict(found, False, [result, *timed], "forward_seconds")
                if case.grad_arg is not None:
                    line.gradient, line.gradient_ms = _verdict(found, True, [result, *timed], "grad_seconds")
                lines.append(line)
    return lines


def _verdict(found, gradient, results, seconds):
    """(status, milliseconds) of the forward or the gradient part of a self-test line: the
    differences found in that part, and the fastest of the timed runs (the checked one alone when
    no run was repeated)."""
    mine = [f for f in found if f.startswith(("gradient", "no gradient")) == gradient]
    timed = results[1:] or results
    return ("FAILED: " + "; ".join(mine) if mine else "ok"), 1e3 * min(getattr(r, seconds) for r in timed)


def self_test_problems(lines):
    problems = []
    for line in lines:
        for part, status in (("forward", line.forward), ("gradient", line.gradient)):
            if status.startswith("FAILED"):
                problems.append(f"self-test: {line.implementation} {line.op} on {line.device}, {part}: {status[len('FAILED: '):]} "
                                "(checked against the float64 brute force; please report it with this output)")
    return problems


def format_self_test(lines, repeats):
    def cell(status, ms):
        return status if ms is None else f"{status:<4} {ms:7.2f} ms"

    table = [("implementation", "device", "op", "forward", "gradient")]
    table += [(t.implementation, t.device, t.op, cell(t.forward, t.forward_ms), cell(t.gradient, t.gradient_ms)) for t in lines]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    text = [f"Self-test: small inputs against the float64 NumPy brute force; times: the fastest of {repeats} runs after a checked one"]
    text += ["  " + "  ".join(v.ljust(w) for v, w in zip(row[:4], widths)) + "  " + row[4] for row in table]
    return "\n".join(text)


def examine(run_self_test=True, repeats=3):
    """Everything jsnet-doctor checks: (Findings, SelfTestLines)."""
    findings = Findings()
    findings.add("jsnet-tf", f"{package_version()} ({pathlib.Path(__file__).resolve().parent})")
    findings.add("Python", f"{platform.python_version()} ({sys.executable})")
    try:
        import tensorflow as tf
    except ImportError as error:
        findings.add("TensorFlow", f"does not import: {error}",
                     f"TensorFlow does not import ({error}): `make install` installs it (tensorflow-cpu, or the CUDA build "
                     "where nvidia-smi works), or `pip install 'tensorflow-cpu==2.21.*'`")
        findings.add("GPUs", "not checked: needs TensorFlow")
        cpu_row(findings)
        findings.add("Op library", "not checked: needs TensorFlow")
        clustering_row(findings)
        findings.add("GPU self-check", "not checked: needs TensorFlow")
        findings.add("Self-test", "not run: needs TensorFlow")
        return findings, []
    cuda_build = tensorflow_row(findings)
    gpus = gpu_rows(findings, cuda_build)
    cpu_row(findings)
    compiled_ok, cuda_kernels = op_library_row(findings, cuda_build, gpus)
    clustering_row(findings)
    self_check_row(findings, cuda_kernels and bool(gpus))
    if not run_self_test:
        findings.add("Self-test", "not run (--noself_test)")
        return findings, []
    from jsnet_tf.ops import custom, reference

    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:1] + tf.config.list_logical_devices("GPU")]

    def compiled_skip(device):
        if not compiled_ok:
            return "the op library is unusable"
        if "GPU" in device and not cuda_kernels:
            return "the op library has no CUDA kernels"
        return None

    implementations = {"compiled": (custom, compiled_skip), "pure-TF": (reference, lambda device: None)}
    lines = self_test(devices, implementations, repeats)
    ran = [t for t in lines if not t.forward.startswith("skipped")]
    passed = sum(not (t.forward.startswith("FAILED") or t.gradient.startswith("FAILED")) for t in ran)
    skipped = [f"{t.implementation} {t.op} on {t.device} {t.forward}" for t in lines if t.forward.startswith("skipped")]
    summary = (f"{passed} of {len(ran)} op runs passed on {', '.join(_short(d) for d in devices)}"
               + "".join(f"; {s}" for s in skipped) + " (table below)")
    findings.add("Self-test", summary, *self_test_problems(lines))
    return findings, lines


def report(findings, lines, repeats):
    """The printed report: the rows, the self-test table, then the problems (or that there are none)."""
    width = max(len(label) for label, _ in findings.rows)
    text = [f"{label.ljust(width)}  {value}" for label, value in findings.rows]
    if lines:
        text += ["", format_self_test(lines, repeats)]
    text.append("")
    if findings.problems:
        text += [f"problem: {problem}" for problem in findings.problems]
    else:
        text.append("no problems found")
    return "\n".join(text)


def define_flags():
    """The command line's flags; defined only when run as a program."""
    flags.DEFINE_bool("self_test", True, "run every op on every device (compiled and pure-TF) against the float64 "
                                         "brute force on small inputs, forward and gradient, timed; --noself_test: the rows only")
    flags.DEFINE_integer("repeats", 3, "timed runs of each op after its checked run; the fastest is shown", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    findings, lines = examine(FLAGS.self_test, FLAGS.repeats)
    print(report(findings, lines, FLAGS.repeats), flush=True)
    return 1 if findings.problems else 0


def cli():
    """The `jsnet-doctor` console script (also `python -m jsnet_tf.doctor`, `make doctor`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="doctor")


if __name__ == "__main__":
    cli()
