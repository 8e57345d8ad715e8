"""Paddle inference program -> ONNX, offline and quiet, with the converter's known defects repaired.

``paddle.onnx.export`` (paddle2onnx 2.x) re-saves the model and then runs Polygraphy's constant folding,
which sets ``POLYGRAPHY_AUTOINSTALL_DEPS=1`` and pip-installs onnx_graphsurgeon (from NVIDIA's index),
onnxruntime and sympy into the user's environment, printing ~20 lines. Here the program that
``paddle.jit.save`` already wrote is converted by ``paddle2onnx.export`` with ``save_file=None`` (the
optimiser step only runs when paddle2onnx writes the file itself) and ``optimize_tool=None``; ONNX Runtime
does the graph optimisation when it loads the model. The converter's own prints (C++ and Python) go to a
temp file and reach the user only when the conversion fails.

Repairs, each checked afterwards by running the model against dygraph (``export_model`` verifies):
- paddle2onnx 2.1 reads float attributes as float32, but Paddle 3's PIR stores some as float64, and the
  converter then reads garbage (uninitialised or reinterpreted bits) instead of failing:
  - ``group_norm``'s ``epsilon`` -> the ``InstanceNormalization`` epsilon (seen: 2.4e-44, -1.3e-27, varying
    run to run): variance + eps can be <= 0 and the output NaN. This is the Conv2Former NaN (the notebook
    model downsamples with GroupNorm); with a near-zero epsilon the logits are also off by ~1e-4.
  - ``pad3d``/``pad``'s ``pad_value`` -> the ``Pad`` fill (seen: 1e28): DilateFormer's zero-padded
    keys/values get garbage and its logits are meaningless.
  Both values are copied from the Paddle program. (The other float64 attribute in these models, ``full``'s
  ``value``, converts correctly.)
- initializers no node uses (the converter leaves some) are dropped, so ONNX Runtime does not warn.
"""
import contextlib
import logging
import os
import sys
import tempfile

logger = logging.getLogger("ppvit")


class OnnxExportError(RuntimeError):
    """paddle2onnx could not convert the program; the message holds its output."""


@contextlib.contextmanager
def _captured_output():
    """Send fds 1 and 2 (the C++ converter prints there too) to a temp file; yield a reader of it."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        text = {"out": ""}
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text["out"] = sink.read().decode("utf-8", errors="replace")


def convert(program_file, params_file, opset_version=13):
    """The ONNX ``ModelProto`` of a saved Paddle inference program, repaired (see the module docstring).

    Raises ``ImportError`` when paddle2onnx or onnx is missing, ``OnnxExportError`` when conversion fails.
    """
    import onnx
    import paddle2onnx

    with _captured_output() as captured:
        try:
            model_bytes = paddle2onnx.export(
                program_file, params_file, save_file=None, opset_version=opset_version,
                auto_upgrade_opset=True, verbose=False, enable_onnx_checker=True, enable_optimize=True,
                optimize_tool=None)
        except SystemExit:  # paddle2onnx's logging.error() calls sys.exit on a failed conversion
            model_bytes = None
        except Exception as e:  # noqa: BLE001 - the converter raises anything; reported below with its output
            model_bytes, error = None, e
        else:
            error = None
    logger.debug("paddle2onnx output:\n%s", captured["out"])
    if not model_bytes:
        lines = [ln for ln in captured["out"].splitlines() if ln.strip()]
        detail = f"{type(error).__name__}: {error}" if error else " | ".join(lines[-5:]) or "no output"
        raise OnnxExportError(f"paddle2onnx could not convert {program_file}: {detail}")
    model = onnx.load_from_string(model_bytes)
    _fix_group_norm_epsilon(model, program_file)
    _fix_pad_value(model, program_file)
    _drop_unused_initializers(model)
    return model


def _fix_group_norm_epsilon(model, program_file):
    from onnx import helper

    from .backends import program_op_list

    eps = [float(a.get("epsilon", 1e-5)) for name, a in program_op_list(program_file) if name == "group_norm"]
    nodes = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    if not eps or not nodes:
        return
    if len(eps) != len(nodes):
        # instance_norm ops also map to InstanceNormalization: only a uniform epsilon can be set safely
        if len(set(eps)) != 1 or any(name == "instance_norm" for name, _ in program_op_list(program_file)):
            logger.debug("cannot match %d group_norm ops to %d InstanceNormalization nodes", len(eps), len(nodes))
            return
        eps = eps[:1] * len(nodes)
    for node, e in zip(nodes, eps):
        for attr in node.attribute:
            if attr.name == "epsilon":
                node.attribute.remove(attr)
                break
        node.attribute.append(helper.make_attribute("epsilon", e))


def _fix_pad_value(model, program_file):
    import re

    import numpy as np
    from onnx import numpy_helper

    from .backends import program_op_list

    values = {}
    for name, a in program_op_list(program_file):
        if name in ("pad3d", "pad"):
            values.setdefault(name, []).append(float(a.get("pad_value") or 0.0))
    if not values:
        return
    for node in model.graph.node:
        m = re.fullmatch(r"p2o\.pd_op\.(pad3d|pad)\.(\d+)\.0", node.output[0]) if node.op_type == "Pad" else None
        if not m or int(m.group(2)) >= len(values.get(m.group(1), [])):
            continue
        fill = f"ppvit.pad_value.{m.group(1)}.{m.group(2)}"
        value = np.array(values[m.group(1)][int(m.group(2))], dtype=np.float32)  # the models here pad float32
        model.graph.initializer.append(numpy_helper.from_array(value, fill))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = fill


def _drop_unused_initializers(model):
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
