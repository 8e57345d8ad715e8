"""The engines behind ``Predictor``: Paddle Inference (fp32 with oneDNN, or bf16 on CPUs with native bf16)
and ONNX Runtime (fp32). Each maps an NCHW float32 chunk to float32 logits; ``Predictor`` picks one.

Names (the ``backend`` argument, ``Infer.backend`` etc., and the keys of the export metadata):

- ``paddle``: Paddle Inference fp32; oneDNN kernels on CPU, CUDA on a GPU. The reference precision.
- ``paddle_bf16``: Paddle Inference with oneDNN's bf16 kernels. Only on CPUs with avx512_bf16 or AMX
  (``bf16_support``); elsewhere oneDNN emulates bf16 and it is slower than fp32, so it is not offered.
- ``onnxruntime``: ONNX Runtime's CPU execution provider on ``<prefix>.onnx``, fp32.

Creating a CPU ``PaddleBackend`` makes sure glibc's malloc keeps freed memory (``utils.quiet.keep_freed_memory``,
which ``import ppvit`` already calls): Paddle Inference mallocs and frees its activations on every run, and with
glibc's defaults each was a fresh, page-faulted mmap, which cost more than half of a small model's bf16 forward.

int8 is not offered: measured on this project's models, static int8 ONNX was slower than fp32 (ONNX Runtime
has no fast int8 depthwise/large-kernel convolutions) and needs calibration data to stay accurate.
"""
import logging
import os

import numpy as np

from ..utils.quiet import cpu_flags, keep_freed_memory

logger = logging.getLogger("ppvit")

PADDLE, PADDLE_BF16, ONNXRUNTIME = "paddle", "paddle_bf16", "onnxruntime"
BACKENDS = (PADDLE, PADDLE_BF16, ONNXRUNTIME)
AUTO = "auto"
REDUCED_PRECISION = {PADDLE_BF16: "bf16"}
LABELS = {PADDLE: "Paddle Inference fp32", PADDLE_BF16: "Paddle Inference bf16", ONNXRUNTIME: "ONNX Runtime fp32"}

# Ops whose oneDNN kernels are unsafe in Paddle 3.3: the generic `pad` op (F.pad with a pad per dimension)
# corrupts the heap (glibc "malloc assertion failure", or a hang) instead of raising, so a program holding
# one runs on the plain CPU kernels. F.pad on the last two dims of NCHW (the pad3d op) is fine.
ONEDNN_UNSAFE_OPS = ("pad",)


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads():
    """``OMP_NUM_THREADS`` when the user set it, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else cpu_count()


def bf16_support():
    """(True, what) where the CPU computes bf16 natively (avx512_bf16 or AMX), else (False, why not).

    Paddle's own check (``supports_bfloat16_fast_performance``) is used when it exists, the CPU flags
    otherwise: without them oneDNN emulates bf16 and it is slower than fp32.
    """
    flags = cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    try:
        from paddle.base import core

        fast = bool(core.supports_bfloat16_fast_performance())
    except (ImportError, AttributeError):
        fast = bool(native)
    if fast:
        return True, "native bf16 (" + (", ".join(native) or "Paddle's check") + ")"
    return False, "this CPU has no native bf16 (avx512_bf16/AMX), so oneDNN's bf16 would be slower than fp32"


def program_ops(program_file):
    """Names of the ops in a PIR ``.json`` program (op nodes carry ``"#": "<dialect>.<name>"``); an empty
    set for other formats."""
    return {name for name, _ in program_op_list(program_file)}


def program_op_list(program_file):
    """[(op name, {attribute: value})] of a PIR ``.json`` program in program order ([] for other formats)."""
    import json

    if not program_file.endswith(".json"):
        return []
    with open(program_file, encoding="utf-8") as f:
        tree = json.load(f)
    ops = []

    def walk(node):
        if isinstance(node, dict):
            tag = node.get("#")
            if isinstance(tag, str) and "O" in node and "A" in node:  # an operation (it lists its outputs)
                attrs = {}
                for a in node["A"] if isinstance(node["A"], list) else []:
                    if isinstance(a, dict) and "N" in a and isinstance(a.get("AT"), dict):
                        attrs[a["N"]] = a["AT"].get("D")
                ops.append((tag.split(".", 1)[-1], attrs))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return ops


class PaddleBackend:
    """Paddle Inference on ``program``/``params``: fp32 (oneDNN on CPU, CUDA on GPU), or oneDNN bf16."""

    def __init__(self, program, params, device="cpu", device_id=None, threads=None, bf16=False, onednn=True,
                 ir_optim=True, label=None):
        self.files = (program, params)
        self.device, self.device_id = device, device_id
        self.threads = int(threads) if threads else default_threads()
        self.bf16 = bool(bf16)
        self.name = PADDLE_BF16 if self.bf16 else PADDLE
        self.label = label or program
        if self.bf16 and device != "cpu":
            raise ValueError(f"backend {PADDLE_BF16!r} runs on CPU only (oneDNN); use device='cpu'")
        self.onednn = (bool(onednn) or self.bf16) and device == "cpu"
        unsafe = sorted(program_ops(program) & set(ONEDNN_UNSAFE_OPS)) if self.onednn else []
        if unsafe:
            if self.bf16:
                raise RuntimeError(f"{self.label} uses {', '.join(unsafe)}, whose oneDNN kernel is broken in this "
                                   "Paddle, and bf16 needs oneDNN")
            logger.warning("%s uses %s, whose oneDNN kernel is broken in this Paddle; running it on the plain "
                           "CPU kernels (slower)", self.label, ", ".join(unsafe))
            self.onednn = False
        self._ir_optim = ir_optim
        if self.device == "cpu":
            keep_freed_memory()
        self._build()

    def _build(self):
        from paddle import inference

        config = inference.Config(*self.files)
        if self.device == "gpu":
            config.enable_use_gpu(256, self.device_id or 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(self.threads)
            if self.onednn:
                config.enable_onednn()
                # oneDNN caches kernels per input shape; chunking makes at most a few shapes.
                config.set_onednn_cache_capacity(8)
                if self.bf16:
                    config.enable_onednn_bfloat16()
            else:
                config.disable_onednn()  # Paddle 3 turns it on by default on CPU
        config.switch_ir_optim(self._ir_optim)
        config.disable_glog_info()
        self._predictor = inference.create_predictor(config)
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])

    def __call__(self, chunk):
        self._input.reshape(list(chunk.shape))
        self._input.copy_from_cpu(chunk)
        try:
            self._predictor.run()
        except RuntimeError as e:
            if not self.onednn or self.bf16:  # bf16 without oneDNN would be a different, unverified engine
                raise
            # Some fused oneDNN kernels reject shapes the plain CPU kernels take (Paddle 3.3: a matmul of a
            # 4-D input with a transposed weight); stay correct, slower, rather than fail.
            logger.warning("oneDNN failed on %s (%s); falling back to Paddle's plain CPU kernels", self.label, e)
            self.onednn = False
            self._build()
            return self(chunk)
        return np.asarray(self._output.copy_to_cpu(), dtype=np.float32)


class OnnxRuntimeBackend:
    """ONNX Runtime's CPU execution provider on an ``.onnx`` file, all graph optimisations on."""

    name = ONNXRUNTIME

    def __init__(self, onnx_file, threads=None, label=None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError(f"backend {ONNXRUNTIME!r} needs the onnxruntime package ({e}); "
                               "pip install onnxruntime") from None
        self.threads = int(threads) if threads else default_threads()
        self.label = label or onnx_file
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its graph-cleaning notices are not the user's concern
        self._session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.onednn = False

    def __call__(self, chunk):
        out = self._session.run(None, {self._input: chunk})[0]
        return np.asarray(out, dtype=np.float32)
