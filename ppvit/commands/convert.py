"""``ppvit convert`` (tools/convert_weights.py): an official PyTorch checkpoint (or a ``.safetensors`` file in
the PyTorch layout) -> ppvit weights (``.pdparams`` or ``.safetensors``, Paddle keys).

    ppvit convert --model convit_tiny --src convit_tiny.pth --dst convit_tiny.safetensors

The steps, each a function:
1. ``ppvit.io.read_checkpoint`` reads the file (torch-free by default, see ``ppvit.io.torch_checkpoint``).
2. ``convert_state_dict``: the family's ``checkpoint_filter_fn`` (its key map, kept beside the model as
   data) renames keys, transposes ``nn.Linear`` weights and drops what Paddle does not keep.
3. ``build_model`` + ``ppvit.io.compare_state_dict``: the registered model is built (its class count read
   from the checkpoint's head unless given) and every key and shape must match; otherwise
   ``ConversionError`` lists the missing, unexpected and mismatched keys.
4. The loaded model's ``state_dict`` is written atomically: a failed conversion never touches ``dst``.
"""
import argparse
import logging
import os

from ..io import CheckpointError, compare_state_dict, save_state, weights_mismatch_message
from ..io.torch_checkpoint import ConversionError, read_checkpoint

__all__ = ["ConversionError", "read_checkpoint", "convert_state_dict", "build_model", "convert_checkpoint",
           "OUTPUT_SUFFIXES", "add_arguments", "run"]

logger = logging.getLogger("ppvit")

OUTPUT_SUFFIXES = (".pdparams", ".safetensors")


def _filter_fn(model_name):
    """The ``checkpoint_filter_fn`` of ``model_name``'s cfg (its family's key map)."""
    from ..models import get_model_cfg

    try:
        fn = get_model_cfg(model_name).checkpoint_filter_fn
    except ValueError as e:  # unknown name
        raise ConversionError(str(e)) from None
    if fn is None:
        raise ConversionError(f"{model_name} has no PyTorch key map (checkpoint_filter_fn in its cfg): its "
                              "weights come from ppvit/Paddle only")
    return fn


def convert_state_dict(model_name, torch_state):
    """Apply the key map of ``model_name``'s family: PyTorch names/layouts -> Paddle {name: np.ndarray}."""
    filter_fn = _filter_fn(model_name)
    try:
        return filter_fn(dict(torch_state))
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    except ValueError as e:  # e.g. ConvMixer's layout detection on another family's keys
        raise ConversionError(f"{model_name}: {e}") from None


def _head_classes(model, state):
    """Class count of the checkpoint's classifier (Paddle Linear weights are [in, out])."""
    for name in (model.pretrained_cfg["classifier"],):
        w = state.get(f"{name}.weight")
        if w is not None and w.ndim == 2:
            return int(w.shape[1])
    return None


def build_model(model_name, state=None, **model_kwargs):
    """Build ``model_name``; without ``num_classes`` in ``model_kwargs`` the class count is the one of
    ``state``'s classifier (1000 for ImageNet checkpoints)."""
    from ..models import create_model

    try:
        model = create_model(model_name, **model_kwargs)
        if state is not None and "num_classes" not in model_kwargs:
            n = _head_classes(model, state)
            if n is not None and n != model.num_classes:
                model = create_model(model_name, num_classes=n, **model_kwargs)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"cannot build {model_name} with {model_kwargs}: {e}") from None
    return model


def convert_checkpoint(model_name, src, dst, reader="auto", **model_kwargs):
    """Convert ``src`` (PyTorch .pth/.pth.tar or .safetensors, official layout) into ``dst``
    (``.pdparams`` or ``.safetensors``, Paddle keys) for ``model_name``; returns the loaded model.

    Raises ``ConversionError`` (nothing written) when the file cannot be read, or when its keys or
    shapes do not match the model, listing every offending key.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not dst.endswith(OUTPUT_SUFFIXES):
        raise ConversionError(f"--dst must end with .pdparams or .safetensors, got {dst}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError("--src and --dst are the same file")
    _filter_fn(model_name)  # unknown model / family without key map: fail before reading a big file
    torch_state = read_checkpoint(src, reader=reader)
    state = convert_state_dict(model_name, torch_state)
    model = build_model(model_name, state, **model_kwargs)
    own = model.state_dict()
    diff = compare_state_dict(own, state)
    if diff:
        raise ConversionError(weights_mismatch_message(
            diff, src, model_name, len(own), f"is it a {model_name} checkpoint, complete, in an official layout? "
            "(--model, --model-arg)"))
    model.set_state_dict({k: state[k].astype(own[k].numpy().dtype, copy=False) for k in own})
    save_state(model.state_dict(), dst)
    dropped = len(torch_state) - len(state)
    logger.info("converted %s -> %s: %d tensors for %s (%d classes); %d source entries dropped by the key map",
                src, dst, len(own), model_name, model.num_classes, dropped)
    return model



# ----------------------------------------------------------------------------------------- command line
def _model_arg(text):
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def add_arguments(parser):
    """``ppvit convert``'s arguments (the converter has no config file: it is a model name and two paths)."""
    parser.add_argument("--model", required=True, help="registered model name, e.g. convit_tiny")
    parser.add_argument("--src", required=True, help=".pth / .pth.tar / .safetensors in the PyTorch layout")
    parser.add_argument("--dst", required=True, help="output .pdparams or .safetensors (Paddle keys)")
    parser.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="model builder argument (YAML value), e.g. img_size=384; repeatable. The class "
                             "count is read from the checkpoint unless num_classes is given")
    parser.add_argument("--reader", choices=("builtin", "torch"), default="builtin",
                        help="how to read .pth files: builtin (no torch needed, never runs code from the "
                             "file) or torch (torch.load with weights_only=True)")
    return parser


def run(args):
    """Convert as ``args`` (from ``add_arguments``) say; user errors raise ``CheckpointError``/``OSError``."""
    # ppvit's own console handler: logging.basicConfig would do nothing, because Paddle's import (under the
    # bootstrap's redirected stderr) already gave the root logger a handler writing into that buffer
    from ..engine.logger import setup_logging

    from ..engine.config import expand_path

    setup_logging(console=True)
    src, dst = expand_path(args.src, "--src"), expand_path(args.dst, "--dst")  # ~ and $VARS, as in configs
    return convert_checkpoint(args.model, src, dst, reader=args.reader, **dict(args.model_arg))


