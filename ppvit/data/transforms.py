"""Image pipelines as data: a list of ops in PaddleClas's ``transform_ops`` convention, ``[{OpName: {args}}]``,
run on an explicit image backend (``cv2``: RGB HWC uint8 ndarrays, OpenCV resizing; ``pil``: PIL images).

Ops (docs/data.md lists their arguments):

- ``paddle.vision.transforms`` by their class names, run as Paddle runs them: ``Resize``, ``RandomResizedCrop``,
  ``CenterCrop``, ``RandomCrop``, ``ColorJitter``, ``RandomHorizontalFlip``, ``RandomVerticalFlip``,
  ``RandomRotation``, ``RandomErasing``, ``Grayscale``, ``ToTensor``, ``Normalize``;
- timm's ImageNet ops with timm's random draws (``ppvit.data.transforms_factory``, PIL only):
  ``TimmRandomResizedCrop``, ``TimmHorizontalFlip``, ``TimmColorJitter``, ``TimmAutoAugment`` (a RandAugment
  or AutoAugment config string), ``TimmResizeShorter``, ``TimmCenterCrop``, ``TimmNormalize`` (ToTensor +
  Normalize), ``TimmRandomErasing`` (after TimmNormalize), and ``CreateTransform`` (the whole of timm's
  ``create_transform`` with its keyword arguments).

An argument not written takes the run's value: ``size`` is ``Arch.img_size`` (``Resize`` also takes
``size_ratio: [a, b]`` for ``round(img_size * a / b)``), ``mean``/``std``/``interpolation``/``crop_pct`` the
model's ``pretrained_cfg``, so ``-o Arch.img_size=64`` runs any pipeline at 64 px.

The notebooks' four pipelines are named presets of such lists (``PRESETS``): ``conv2former_cifar`` (000),
``convit`` (002), ``dilateformer`` (004) and ``basic``; ``Data.transform`` names one, and ``Data.train_ops`` /
``Data.eval_ops`` / ``Data.image_backend`` replace its parts.
"""
import copy
import math
from dataclasses import dataclass

import numpy as np

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .errors import DataError

BACKENDS = ("cv2", "pil")
MEAN, STD = list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)
NORMALIZE = {"Normalize": {}}  # mean/std: the run's (the model's pretrained_cfg: ImageNet's for all five)

# ------------------------------------------------------------------------------------------------ presets
# notebook 000 (train_tfm / test_tfm), at 32x32 by default
_CONV2FORMER_TRAIN = [
    {"Resize": {}},
    {"ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}},
    # The notebook had paddlex.transforms.MixupImage() here: it expects a detection sample dict, so on a bare
    # image it did nothing (and paddlex 3.x has no paddlex.transforms). Left out; real MixUp/CutMix is
    # batch-level (ppvit.data.mix, Data.mixup_alpha / Data.cutmix_alpha).
    {"RandomResizedCrop": {"scale": [0.6, 1.0]}},
    {"RandomErasing": {}},  # before ToTensor, as in the notebook: erases (to 0) on the HWC uint8 image
    {"RandomHorizontalFlip": {"prob": 0.5}},
    {"RandomRotation": {"degrees": 20}},
    {"ToTensor": {}},
    NORMALIZE,
]
_SQUASH_EVAL = [{"Resize": {}}, {"ToTensor": {}}, NORMALIZE]
# notebook 002: one pipeline for both splits. Normalize runs on 0-255 HWC pixels *before* ToTensor, which then
# keeps the float array as is: inputs are (pixel - mean) / std with pixel in 0..255 (roughly -2..1100). Kept
# because weights trained by the notebook expect exactly this.
_CONVIT = [{"Resize": {}}, {"Normalize": {"data_format": "HWC"}}, {"ToTensor": {}}]
# notebook 004 (train_tfm / test_tfm), at 224x224 by default; train resizes to 230 then crops 224
_DILATEFORMER_TRAIN = [
    {"Resize": {"size_ratio": [230, 224]}},
    {"ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}},
    {"RandomResizedCrop": {"scale": [0.6, 1.0]}},
    {"RandomHorizontalFlip": {"prob": 0.5}},
    {"RandomRotation": {"degrees": 20}},
    # paddlex.transforms.MixupImage() stood here: a no-op on bare images (see conv2former_cifar)
    {"ToTensor": {}},
    NORMALIZE,
]


@dataclass(frozen=True)
class Preset:
    train: list  # ops of the training split
    eval: list  # ops of the test split
    default_size: int  # the notebook's image size (when no Arch.img_size is given)
    backend: str  # 'cv2' (HWC uint8 RGB ndarray, OpenCV resizing) or 'pil'

    def ops(self, mode):
        return copy.deepcopy(self.train if mode == "train" else self.eval)


PRESETS = {
    "conv2former_cifar": Preset(_CONV2FORMER_TRAIN, _SQUASH_EVAL, 32, "cv2"),
    # notebooks 000 and 004 call paddle.vision.set_image_backend('cv2'); 002 never does (PIL resizing)
    "convit": Preset(_CONVIT, _CONVIT, 224, "pil"),
    "dilateformer": Preset(_DILATEFORMER_TRAIN, _SQUASH_EVAL, 224, "cv2"),
    "basic": Preset(_SQUASH_EVAL, _SQUASH_EVAL, 32, "cv2"),
}
PIPELINES = PRESETS  # the name other modules import


def get_pipeline(name):
    """The preset ``name`` (``Data.transform``); an unknown one is a ``DataError`` listing the presets."""
    if name not in PRESETS:
        raise DataError(f"unknown Data.transform '{name}'; accepted: {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------------- ops
# op -> (argument names it takes, which of them default to the run's values)
PADDLE_OPS = {
    "Resize": ("size", "interpolation", "size_ratio"),
    "RandomResizedCrop": ("size", "scale", "ratio", "interpolation"),
    "CenterCrop": ("size",),
    "RandomCrop": ("size", "padding", "pad_if_needed", "fill", "padding_mode"),
    "ColorJitter": ("brightness", "contrast", "saturation", "hue"),
    "RandomHorizontalFlip": ("prob",),
    "RandomVerticalFlip": ("prob",),
    "RandomRotation": ("degrees", "interpolation", "expand", "center", "fill"),
    "RandomErasing": ("prob", "scale", "ratio", "value", "inplace"),
    "Grayscale": ("num_output_channels",),
    "ToTensor": ("data_format",),
    "Normalize": ("mean", "std", "data_format", "to_rgb"),
}
TIMM_OPS = {
    "TimmRandomResizedCrop": ("size", "scale", "ratio", "interpolation"),
    "TimmHorizontalFlip": ("p",),
    "TimmColorJitter": ("brightness", "contrast", "saturation", "hue"),
    "TimmAutoAugment": ("config_str", "interpolation", "translate_const", "img_mean"),
    "TimmResizeShorter": ("size", "interpolation", "crop_pct"),
    "TimmCenterCrop": ("size",),
    "TimmNormalize": ("mean", "std"),
    "TimmRandomErasing": ("probability", "mode", "max_count", "min_area", "max_area", "min_aspect", "max_aspect"),
    "CreateTransform": ("input_size", "is_training", "scale", "ratio", "hflip", "color_jitter", "auto_augment",
                        "interpolation", "mean", "std", "crop_pct", "re_prob", "re_mode", "re_count"),
}
OPS = {**PADDLE_OPS, **TIMM_OPS}


@dataclass
class RunDefaults:
    """The values an op's unwritten arguments take: the input size (``Arch.img_size``) and the model's
    ``pretrained_cfg`` mean, std, interpolation and crop_pct."""
    img_size: int
    mean: tuple = IMAGENET_DEFAULT_MEAN
    std: tuple = IMAGENET_DEFAULT_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    @classmethod
    def of_model(cls, name, img_size):
        """From ``get_model_cfg(name)``; no name (a bare ``Data`` section): ImageNet's values."""
        if not name:
            return cls(int(img_size))
        from ..models import get_model_cfg

        mc = get_model_cfg(name)
        return cls(int(img_size), tuple(mc.mean), tuple(mc.std), mc.interpolation or "bilinear",
                   mc.crop_pct or 0.875)


def _split(op, where):
    if not (isinstance(op, dict) and len(op) == 1):
        raise DataError(f"{where}: each op is a one-key mapping {{OpName: {{args}}}}, got {op!r}")
    (name, args), = op.items()
    if name not in OPS:
        import difflib

        close = difflib.get_close_matches(str(name), list(OPS), n=1)
        raise DataError(f"{where}: unknown op '{name}'" + (f" (did you mean {close[0]}?)" if close else "")
                        + f"; accepted: {', '.join(OPS)}")
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise DataError(f"{where}: the arguments of {name} are a mapping, got {args!r}")
    unknown = sorted(set(args) - set(OPS[name]))
    if unknown:
        raise DataError(f"{where}: {name} takes no argument {', '.join(unknown)}; accepted: {', '.join(OPS[name])}")
    return name, dict(args)


def resolve_ops(ops, defaults, where="Data.train_ops", mode="train"):
    """``ops`` with every run-dependent argument written out (size, mean, std, interpolation, crop_pct from
    ``defaults``, a :class:`RunDefaults`): what an export records, independent of the config it came from.
    Unknown ops or arguments are a ``DataError`` naming ``where``."""
    if not isinstance(ops, list) or not ops:
        raise DataError(f"{where} must be a non-empty list of {{OpName: {{args}}}}, got {ops!r}")
    out = []
    size = int(defaults.img_size)
    for op in ops:
        name, args = _split(op, where)
        if name == "Resize":
            ratio = args.pop("size_ratio", None)
            if "size" not in args:
                args["size"] = [size, size] if ratio is None else [int(round(size * ratio[0] / ratio[1]))] * 2
        elif name in ("RandomResizedCrop", "CenterCrop", "RandomCrop", "TimmRandomResizedCrop", "TimmCenterCrop"):
            args.setdefault("size", size)
        elif name == "Normalize":
            args.setdefault("mean", list(defaults.mean))
            args.setdefault("std", list(defaults.std))
        elif name == "TimmNormalize":
            args.setdefault("mean", list(defaults.mean))
            args.setdefault("std", list(defaults.std))
        elif name == "TimmResizeShorter":
            crop_pct = args.pop("crop_pct", None) or defaults.crop_pct
            args.setdefault("size", math.floor(size / crop_pct))
            args.setdefault("interpolation", defaults.interpolation)
        elif name == "TimmRandomResizedCrop":
            args.setdefault("interpolation", defaults.interpolation)
        elif name == "TimmAutoAugment":
            if "config_str" not in args:
                raise DataError(f"{where}: TimmAutoAugment needs config_str, e.g. rand-m9-mstd0.5-inc1")
            args.setdefault("interpolation", defaults.interpolation)
            args.setdefault("translate_const", int(size * 0.45))
            args.setdefault("img_mean", [min(255, round(255 * m)) for m in defaults.mean])
        elif name == "CreateTransform":
            args.setdefault("input_size", size)
            args.setdefault("is_training", mode == "train")
            args.setdefault("mean", list(defaults.mean))
            args.setdefault("std", list(defaults.std))
            args.setdefault("interpolation", defaults.interpolation)
            args.setdefault("crop_pct", defaults.crop_pct)
        out.append({name: args})
    return out


def _paddle_op(name, args):
    import paddle.vision.transforms as T

    for key in ("size", "scale", "ratio", "mean", "std"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key]) if key in ("size", "scale", "ratio") else args[key]
    return getattr(T, name)(**args)


def _timm_op(name, args):
    from . import transforms_factory as tf
    from .auto_augment import augment_transform
    from .random_erasing import RandomErasing

    if name == "TimmRandomResizedCrop":
        return tf.RandomResizedCropAndInterpolation(**args)
    if name == "TimmHorizontalFlip":
        return tf.RandomHorizontalFlip(**args)
    if name == "TimmColorJitter":
        return tf.ColorJitter(**args)
    if name == "TimmAutoAugment":
        hparams = {"translate_const": args["translate_const"], "img_mean": tuple(args["img_mean"])}
        if args["interpolation"] != "random":
            hparams["interpolation"] = tf.pil_interpolation(args["interpolation"])
        return augment_transform(args["config_str"], hparams)
    if name == "TimmResizeShorter":
        return tf.ResizeShorter(**args)
    if name == "TimmCenterCrop":
        return tf.CenterCrop(**args)
    if name == "TimmNormalize":
        return tf.ToNormalizedArray(**args)
    if name == "TimmRandomErasing":
        return RandomErasing(**args)
    return tf.create_transform(**args)


def compose(resolved, backend, where="Data.train_ops"):
    """A callable running the resolved ops on ``backend`` images ('cv2': RGB HWC uint8; 'pil'). timm ops need
    the PIL backend (a ``DataError`` says so)."""
    if backend not in BACKENDS:
        raise DataError(f"Data.image_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    import paddle.vision.transforms as T

    built = []
    for op in resolved:
        (name, args), = op.items()
        args = copy.deepcopy(args)
        if name in TIMM_OPS:
            if backend != "pil" and name not in ("TimmNormalize", "TimmRandomErasing"):
                raise DataError(f"{where}: {name} works on PIL images; set Data.image_backend: pil")
            built.append(_timm_op(name, args))
        else:
            try:
                built.append(_paddle_op(name, args))
            except (TypeError, ValueError, AssertionError) as e:
                raise DataError(f"{where}: {name}({args}) is refused by paddle.vision.transforms: {e}") from None
    return T.Compose(built)


# ------------------------------------------------------------------------------------------- resolution
def data_config(cfg):
    """The ``Data`` section of a validated config as the data room reads it: with ``image_size`` (the config's
    ``Arch.img_size``: the size of ops that write none) and ``arch`` (``Arch.name``, whose ``pretrained_cfg``
    gives the mean/std/interpolation/crop_pct of ops that write none). A view: the config itself is unchanged,
    so a run's config.yaml holds only what the user set (timm's ``resolve_data_config``, for ppvit's configs)."""
    return dict(cfg["Data"], image_size=cfg["Arch"]["img_size"], arch=cfg["Arch"]["name"])


def pipeline_spec(data_cfg, mode, arch_name=None):
    """``(backend, resolved ops)`` of a config's ``Data`` section for ``mode`` ('train' or 'test'): the preset
    ``Data.transform``, its train/eval list replaced by ``Data.train_ops`` / ``Data.eval_ops`` and its backend
    by ``Data.image_backend`` when given; unwritten sizes from ``Data.image_size`` (= ``Arch.img_size``), the
    preset's own size without one."""
    if mode not in ("train", "test"):
        raise DataError(f"mode must be 'train' or 'test', got '{mode}'")
    preset = get_pipeline(data_cfg.get("transform") or "conv2former_cifar")
    key = "train_ops" if mode == "train" else "eval_ops"
    ops = preset.ops(mode) if data_cfg.get(key) is None else data_cfg[key]
    backend = data_cfg.get("image_backend") or preset.backend
    if backend not in BACKENDS:
        raise DataError(f"Data.image_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    pil_only = sorted({n for op in (ops if isinstance(ops, list) else []) if isinstance(op, dict)
                       for n in op if n in TIMM_OPS and n not in ("TimmNormalize", "TimmRandomErasing")})
    if pil_only and backend != "pil":
        raise DataError(f"Data.{key}: {', '.join(pil_only)} work on PIL images; set Data.image_backend: pil")
    size = data_cfg.get("image_size") or preset.default_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"Arch.img_size must be a positive integer, got {size!r}")
    defaults = RunDefaults.of_model(arch_name or data_cfg.get("arch"), size) if data_cfg.get(key) else \
        RunDefaults(size)  # the presets normalise with ImageNet's mean/std, as the notebooks did
    return backend, resolve_ops(ops, defaults, f"Data.{key}", mode)


def build_transform(name, mode="train", image_size=None):
    """The transform of preset ``name`` (or of a config's ``Data`` section, a dict) for ``mode`` ('train' or
    'test'); ``image_size`` None keeps the notebook's size (32 for conv2former_cifar/basic, 224 otherwise)."""
    data_cfg = dict(name) if isinstance(name, dict) else {"transform": name}
    if image_size is not None:
        data_cfg["image_size"] = int(image_size)
        if data_cfg["image_size"] < 1:
            raise DataError(f"Arch.img_size must be a positive integer, got {image_size}")
    backend, ops = pipeline_spec(data_cfg, mode)
    return compose(ops, backend, f"Data.{'train' if mode == 'train' else 'eval'}_ops")


def image_backend(data_cfg):
    """The image type the datasets hand the pipeline: 'cv2' or 'pil'."""
    backend = data_cfg.get("image_backend") or get_pipeline(data_cfg.get("transform") or "conv2former_cifar").backend
    if backend not in BACKENDS:
        raise DataError(f"Data.image_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


# -------------------------------------------------------------------------------------- normalisation
class NormStats(tuple):
    """``(mean, std)`` of a pipeline's normalisation; ``pixel_scale`` tells what the un-normalised pixels
    span (1.0: 0..1 after ToTensor; 255.0: 0..255, notebook 002)."""

    def __new__(cls, mean, std, pixel_scale):
        obj = super().__new__(cls, (tuple(mean), tuple(std)))
        obj.pixel_scale = pixel_scale
        return obj

    @property
    def mean(self):
        return self[0]

    @property
    def std(self):
        return self[1]


def split_normalization(resolved, where="Data.eval_ops"):
    """``(image ops, NormStats)``: the ops that make the model-size uint8 image, and the normalisation that
    ends the list (``ToTensor, Normalize``; ``Normalize(data_format=HWC), ToTensor``; or ``TimmNormalize``). An
    eval list that does not end in one of them is a ``DataError``: its inputs cannot be described by
    scale/mean/std (which LIME and the export's verification need)."""
    names = [next(iter(op)) for op in resolved]
    if names[-1:] == ["TimmNormalize"]:
        a = resolved[-1]["TimmNormalize"]
        return resolved[:-1], NormStats(a["mean"], a["std"], 1.0)
    if names[-2:] == ["ToTensor", "Normalize"] and resolved[-1]["Normalize"].get("data_format", "CHW") == "CHW":
        a = resolved[-1]["Normalize"]
        return resolved[:-2], NormStats(a["mean"], a["std"], 1.0)
    if names[-2:] == ["Normalize", "ToTensor"] and resolved[-2]["Normalize"].get("data_format") == "HWC":
        a = resolved[-2]["Normalize"]
        return resolved[:-2], NormStats(a["mean"], a["std"], 255.0)
    raise DataError(f"{where} must end with its normalisation: [ToTensor, Normalize], [Normalize (data_format: "
                    f"HWC), ToTensor] or [TimmNormalize]; got {names}")


def mean_std(name):
    """Normalisation of the eval pipeline of preset ``name`` (or of a ``Data`` section, a dict):
    ``mean, std = mean_std(name)``, plus ``.pixel_scale``."""
    data_cfg = dict(name) if isinstance(name, dict) else {"transform": name}
    _, ops = pipeline_spec(data_cfg, "test")
    return split_normalization(ops)[1]


def denormalize(images, name):
    """Undo the normalisation of pipeline ``name`` (a preset name or a ``Data`` section) for display: CHW or
    NCHW floats (ndarray or Tensor) -> HWC / NHWC float32 in [0, 1]."""
    x = np.asarray(images.numpy() if hasattr(images, "numpy") else images, dtype=np.float32)
    stats = mean_std(name)
    axis = x.ndim - 3  # channel axis: 0 for CHW, 1 for NCHW
    shape = [1] * x.ndim
    shape[axis] = 3
    x = x * np.reshape(stats.std, shape) + np.reshape(stats.mean, shape)
    x = np.clip(x / stats.pixel_scale, 0.0, 1.0)
    return np.moveaxis(x, axis, -1)  # ... C, H, W -> ... H, W, C


# ------------------------------------------------------------------------------- one preprocessing for all
_COMPOSED = {}


def apply_eval_ops(image, ops, backend, normalize=True):
    """The resolved eval ``ops`` on one RGB HWC uint8 image (what the datasets hand the pipeline: the image is
    made a PIL image for the ``pil`` backend): a CHW float32 model input, or with ``normalize=False`` the
    model-size RGB HWC uint8 image before the normalisation (what LIME perturbs). Export records these ops,
    and infer, explain and the predictor apply them through this function, so they see the evaluation's
    inputs: same library, same filter. Raises ``DataError`` for an image that is not HWC RGB."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"expected an RGB HWC uint8 image, got {image.dtype} of shape {image.shape}")
    if not normalize:
        ops = split_normalization(ops, "preprocess ops")[0]
        if not ops:
            return image.copy()
    key = (repr(ops), backend)
    if key not in _COMPOSED:
        _COMPOSED[key] = compose(copy.deepcopy(ops), backend, "preprocess ops")
    if backend == "pil":
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(image))
    out = _COMPOSED[key](np.ascontiguousarray(image) if backend == "cv2" else image)
    if hasattr(out, "numpy"):
        out = out.numpy()
    return np.asarray(out, dtype=np.float32 if normalize else np.uint8)
