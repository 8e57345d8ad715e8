"""What the config-driven commands (eval, export, infer, explain) share: the model with its weights, its
input size and preprocessing, the class names, a predictor on an exported model.

User mistakes raise a ``PpvitError`` (``ConfigError``, ``CheckpointError``, ...), which the CLI prints as one
line, exit 2. Weights are loaded strictly here (no training follows): the head must fit like every other key.
"""
import os

import paddle

from ..deploy.predictor import EXPORT_PREFIX, export_prefix_of  # <folder>/inference.json + .pdiparams + ...
from ..engine.builder import build_device, build_model, seed_everything
from ..engine.config import ConfigError, run_dir


# ------------------------------------------------------------------------------------------ shared pieces
def input_size(cfg):
    """The model's input side: ``Arch.img_size`` (which defaults to the model's ``pretrained_cfg``)."""
    return int(cfg["Arch"]["img_size"])


def class_names(cfg):
    """The dataset's class names, without reading the dataset; an ``Arch.num_classes`` of another count is a
    ``ConfigError`` (``ppvit.data.folder.check_class_count``)."""
    from ..data import CIFAR10_CLASSES, DIGITS_CLASSES, dataset_class_names

    from ..data.folder import check_class_count

    if cfg["Data"]["dataset"] in ("folder", "filelist"):  # subfolder names or the class_id_map_file
        names = dataset_class_names(cfg["Data"])
    else:
        names = list(DIGITS_CLASSES if cfg["Data"]["dataset"] == "digits" else CIFAR10_CLASSES)
    check_class_count(cfg, names)  # Arch.num_classes is the data's class count, as in training
    return names


@paddle.no_grad()
def load_model(cfg):
    """The config's model with its weights (``Global.pretrained_model``, else the run's best model), in eval
    mode on ``Global.device``; weights that do not fit (head included) are a ``CheckpointError``, an input size
    the model does not take is a ``ConfigError``."""
    build_device(cfg["Global"]["device"])
    seed_everything(cfg["Global"]["seed"])
    size = input_size(cfg)
    model = build_model(cfg, training=False, input_shape=(3, size, size))  # the engine's builder
    model.eval()
    return model


def preprocess_of(cfg):
    """The eval pipeline as ``export_model``'s preprocessing: its resolved ops and image backend (``ops``,
    ``backend``: what the predictor, infer and explain apply, ``ppvit.data.transforms.apply_eval_ops``) and
    their summary (size, ``pixel * scale``, mean/std: what LIME and the export's verification use). An eval
    list that does not end in its normalisation is a ``ConfigError``."""
    from ..data import DataError
    from ..data.transforms import data_config, pipeline_spec, split_normalization

    try:
        backend, ops = pipeline_spec(data_config(cfg), "test")
        _, stats = split_normalization(ops)
    except DataError as e:
        raise ConfigError(str(e)) from None
    size = input_size(cfg)
    filters = [a["interpolation"] for op in ops for a in op.values() if isinstance(a.get("interpolation"), str)]
    return {"resize": [size, size], "interpolation": filters[0] if filters else "bilinear", "channel_order": "RGB",
            "scale": stats.pixel_scale / 255.0, "mean": list(stats.mean), "std": list(stats.std),
            "backend": backend, "ops": ops}


def lime_mean_std(preprocess):
    """LIME normalises ``(x / 255 - mean) / std``; the same map as ``(x * scale - m) / s``."""
    k = 255.0 * preprocess["scale"]
    return [m / k for m in preprocess["mean"]], [s / k for s in preprocess["std"]]


def export_command(path, cfg=None):
    """The tools/export.py command that writes an export ``Predictor(path)`` finds: export writes
    ``<Export.output>/inference.*``, so ``Export.output`` is ``path`` itself (a folder then holding one export),
    or the folder of a file given (``x/inference.json``: ``x``); not given when it is the run's default
    (``<run folder>/inference``). A file of another name (``x/model.json``) cannot be written by export: the
    command then says to give ``x/inference`` instead. Export takes ``Global.pretrained_model``, by default the
    run's best model."""
    path = os.path.normpath(os.fspath(path))
    prefix = export_prefix_of(path)
    folder = path if prefix is None else (os.path.dirname(prefix) or ".")
    default = os.path.normpath(os.path.join(run_dir(cfg), EXPORT_PREFIX)) if cfg else None
    command = "tools/export.py -c CONFIG" + ("" if folder == default else f" -o Export.output={folder}")
    if prefix is not None and os.path.basename(prefix) != EXPORT_PREFIX:
        command += f", which names its files {EXPORT_PREFIX}.*: then give {os.path.join(folder, EXPORT_PREFIX)}"
    return command


def open_predictor(prefix, device, batch_size, key, backend="auto", cfg=None):
    """``Predictor(prefix)`` with ``backend`` (``auto``: the fastest one verified at export); a missing export
    (naming the files export would have written for ``prefix`` and the command that writes them; ``cfg``: the
    run's config, whose default export folder needs no ``Export.output``) or a backend that cannot be served is
    a ``ConfigError`` naming ``key``'s section, and an export whose source weights changed since it was made is
    refused (``CheckpointError``)."""
    from ..deploy import BackendError, Predictor
    from ..deploy.predictor import MissingExportError
    from ..io.provenance import check_export_current

    try:
        predictor = Predictor(prefix, device=device, batch_size=batch_size, backend=backend)
    except MissingExportError as e:
        raise ConfigError(f"{key}: {e}; make it with {export_command(prefix, cfg)}") from None
    except FileNotFoundError as e:  # e.g. a folder with several exports: which one is the user's to say
        raise ConfigError(f"{key}: {e}") from None
    except BackendError as e:
        raise ConfigError(f"{key.split('.')[0]}.backend: {e}") from None
    check_export_current(predictor.prefix, predictor.meta, key)  # never serve an export older than its weights
    return predictor


def predictor_of(model, folder, cfg, device, batch_size, backend="auto", key="Eval.use_predictor"):
    """``model`` exported to ``folder`` with the run's preprocessing (every backend verified on inputs
    normalised as the run's data are, and timed) and opened with ``backend``: for many forward passes the
    export pays for itself. ``folder`` must outlive the predictor (it rebuilds from the files if oneDNN fails)."""
    from ..deploy import export_model

    prefix = os.path.join(folder, EXPORT_PREFIX)
    export_model(model, prefix, input_size(cfg), {"preprocess": preprocess_of(cfg)})
    return open_predictor(prefix, device, batch_size, key, backend)


def _as_list(value, key):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{key} is an empty list")
    return values


def image_files(value, key):
    """The image files of ``key`` (``Infer.images``, ``Explain.images``: files and/or folders, a list or one);
    none given, a path that does not exist, or a folder without images, is a ``ConfigError`` naming ``key`` and
    the fix."""
    from ..deploy import expand_image_paths
    from ..io.images import ImageReadError

    fix = f"give image files and/or folders of images, e.g. -o {key}=photo.png or -o {key}=[a.png,images/]"
    if not value:
        raise ConfigError(f"{key} is not set: {fix}")
    try:
        return expand_image_paths(_as_list(value, key))
    except ImageReadError as e:
        raise ConfigError(f"{key}: {e}; {fix}") from None


def rgb_file(path, size=None, preprocess=None):
    """An image file as RGB uint8 HWC; with an export's ``preprocess`` record holding ``ops``, the model-size
    image its eval pipeline makes (before normalisation); else resized (cv2 bilinear) to ``size`` when given."""
    import cv2

    from ..io.images import read_image

    image = read_image(path, "RGB")
    if preprocess and preprocess.get("ops"):
        from ..data.transforms import apply_eval_ops

        return apply_eval_ops(image, preprocess["ops"], preprocess["backend"], normalize=False)
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return image


def _name(names, i):
    return names[i] if i < len(names) else str(i)


def _unique(path, taken):
    """Two files with the same stem (from different folders) must not overwrite each other's figure."""
    base, ext = os.path.splitext(path)
    k = 1
    while path in taken:
        path = f"{base}_{k}{ext}"
        k += 1
    return path
