"""PaddleClas-style configs: ``-c file.yaml`` plus repeated ``-o Section.key=value`` overrides.

The schema below is the single description of every key: its type, default, accepted values and meaning
(``-h`` and docs/config.md are generated from it). Any mistake (bad YAML, unknown section or key, wrong type,
value out of range, unknown model) raises ``ConfigError`` with one message that names the key and what is
accepted; the tools print it and exit 2.
"""
import copy
import difflib
import os

import yaml

from ..errors import PpvitError


class ConfigError(PpvitError):
    """A config the user has to fix."""


REQUIRED = object()  # marker: the key has no default


class Key:
    """One config key: accepted types, default, optional choices, a range check and ``doc``, its one-line
    documentation (``-h`` and docs/config.md show it).

    ``resume``: whether a resumed run may change it. ``"same"`` keys decide the computation (a resume that
    changes one is refused); ``"free"`` keys cannot change the result (paths, workers, logging);
    ``"lr"`` is the learning rate, which may change and applies from the first resumed step.

    ``only_when``: a ``When`` (the settings under which the key has an effect); a config that sets the key to
    anything but its default (or a value that does nothing, ``When.idle``) where it has none is refused.
    """

    def __init__(self, types, default=REQUIRED, choices=None, check=None, doc="", resume="same", only_when=None,
                 path=False):
        self.types = types if isinstance(types, tuple) else (types,)
        self.path = path  # a file or folder: ``~`` and environment variables are expanded (expand_path)
        self.default = default
        self.choices = choices
        self.check = check  # (predicate, "what it must be")
        self.doc = doc
        self.resume = resume
        self.only_when = only_when

    def type_names(self):
        names = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null", list: "list"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


class When:
    """Where a key has an effect, as data beside the schema: ``test(cfg)`` on the validated config, the words
    that name the setting that decides it (``state(cfg)``, e.g. ``Optimizer.scheduler=onecycle``) and the fix
    (``how``). ``idle``: values of the key that do nothing anywhere (``Loss.smoothing: 0``), never refused."""

    def __init__(self, test, state, how, idle=()):
        self.test, self.state, self.how, self.idle = test, state, how, idle


def _get(cfg, path):
    section, key = path.split(".")
    return cfg[section][key]


def key_in(path, values, how=None, idle=()):
    """The key has an effect only when ``path`` (``Section.key``) is one of ``values``."""
    return When(lambda cfg: _get(cfg, path) in values, lambda cfg: f"{path}={_get(cfg, path)}",
                how or f"set {path} to {' or '.join(values)}", idle)


def _mixing(cfg):
    return cfg["Data"]["mixup_alpha"] > 0 or cfg["Data"]["cutmix_alpha"] > 0


MIXING = When(_mixing, lambda cfg: "Data.mixup_alpha=0 and Data.cutmix_alpha=0 (no MixUp/CutMix)",
              "set Data.mixup_alpha and/or Data.cutmix_alpha above 0 to mix batches")
BOTH_MIXES = When(lambda cfg: cfg["Data"]["mixup_alpha"] > 0 and cfg["Data"]["cutmix_alpha"] > 0,
                  lambda cfg: f"Data.mixup_alpha={cfg['Data']['mixup_alpha']} and "
                              f"Data.cutmix_alpha={cfg['Data']['cutmix_alpha']} (it chooses between MixUp and "
                              "CutMix when both are on)",
                  "set both Data.mixup_alpha and Data.cutmix_alpha above 0")


def through_predictor(section):
    """``section.backend`` has an effect only when the verb runs an exported model (``model``/``use_predictor``)."""
    return When(lambda cfg: bool(cfg[section]["model"] or cfg[section]["use_predictor"]),
                lambda cfg: f"{section}.model unset and {section}.use_predictor=false (the weights run in Paddle "
                            "dygraph)",
                f"set {section}.model (an exported model) or {section}.use_predictor=true")


def _positive(v):
    return v is None or v > 0


def _non_negative(v):
    return v is None or v >= 0


def _unit_open(v):
    return v is None or 0.0 < v < 1.0


def _prob(v):
    return 0.0 <= v <= 1.0


def _unit_closed(v):
    return v is None or 0.0 <= v <= 1.0


def _smoothing(v):
    return v is None or 0.0 <= v < 1.0


NONE = type(None)


def expand_path(value, name="path"):
    """``value`` with ``~``/``~user`` and ``$VAR``/``${VAR}`` expanded, as a shell would; a variable that is
    not set is a ``ConfigError`` naming ``name`` (else it would become a folder literally named ``$VAR``)."""
    import re

    expanded = os.path.expandvars(os.path.expanduser(os.fspath(value)))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ConfigError(f"{name}={value!r}: environment variable {unset[0]} is not set; set it or write the "
                          "path out")
    return expanded


def PathKey(types=(str, NONE), default=None, **kwargs):
    """A key holding a path (or, with ``list`` in ``types``, a list of paths): see ``expand_path``."""
    return Key(types, default, path=True, **kwargs)
# tools/eval|infer|explain through a predictor; ppvit.deploy.backends names them (not imported: paddle-free)
BACKENDS = ("auto", "paddle", "paddle_bf16", "onnxruntime")
POSITIVE = (_positive, "> 0")
NON_NEGATIVE = (_non_negative, ">= 0")

# One entry per key: type(s), default, accepted values, the check, what a resume may do with it (``Key.resume``)
# and its one-line documentation (``doc``), from which ``-h`` and docs/config.md are generated
# (``python -m ppvit.commands.help --markdown > docs/config.md``). A new key is one line here.
SCHEMA = {
    "Global": {
        "device": Key(str, "auto", choices=("auto", "gpu", "cpu"), resume="free",
                      doc="auto = the GPU when Paddle has one, else the CPU"),
        "seed": Key(int, 42, doc="seeds Paddle, numpy and Python (weights init, data order, augmentation, LIME)"),
        "epochs": Key(int, REQUIRED, check=POSITIVE, doc="training epochs (the learning-rate schedule spans them)"),
        "output_dir": PathKey(str, "./output", resume="free",
                              doc="parent folder of the run folders (~ and $VARS are expanded, as in every path key)"),
        "run_name": Key((str, NONE), None, resume="free",
                        doc="run folder name under output_dir; null = the config file's name (quickstart.yaml -> "
                            "output/quickstart)"),
        "pretrained_model": PathKey(resume="free",
                                doc="weights (.pdparams/.safetensors) to start training from, or to evaluate, export "
                                    "and explain; null = the run's best_model.pdparams (a resume takes its own)"),
        "checkpoints": PathKey(resume="free", doc="resume a run: its folder or its latest prefix"),
        "overwrite": Key(bool, False, resume="free",
                         doc="train into a run folder that already holds a run, replacing it (else refused)"),
        "extend": Key(bool, False, resume="free",
                      doc="resume a finished run for more epochs (Global.epochs = the new total); the schedule "
                          "restarts over the added ones"),
        "eval_interval": Key(int, 1, check=POSITIVE, resume="free",
                             doc="validate every N epochs (and always after the last)"),
        "print_interval": Key(int, 10, check=POSITIVE, resume="free",
                              doc="a log line (step, lr, loss, img/s, eta) every N training steps, on the console and "
                                  "in train.log, as PaddleClas's print_batch_step"),
        "save_interval": Key(int, 0, check=NON_NEGATIVE, resume="free",
                             doc="also write the resumable latest.* checkpoint every N steps inside an epoch; 0 = only "
                                 "at the end of each epoch"),
        "use_amp": Key(bool, False, doc="mixed precision (GPU)"),
        "sync_bn": Key(bool, False,
                       doc="several GPUs: BatchNorm statistics over the global batch (SyncBatchNorm; no CPU kernel); "
                           "off, each rank's running statistics are averaged before every evaluation and save"),
        "ema_decay": Key((float, NONE), None, check=(_unit_open, "between 0 and 1 (exclusive)"),
                         doc="keep an exponential moving average of the weights with this decay; null = off"),
        "use_visualdl": Key(bool, False, resume="free",
                            doc="also log scalars to <run folder>/vdl for VisualDL (pip install visualdl)"),
    },
    "Arch": {
        "name": Key(str, REQUIRED, doc="a registered model name (ppvit.list_models())"),
        "num_classes": Key(int, REQUIRED, check=POSITIVE, doc="classes of the classifier head"),
        "img_size": Key((int, NONE), None, check=POSITIVE,
                        doc="input side in pixels, the one input-size key: the model is built for it and the data "
                            "resized to it; null = the model's default (get_model_cfg(name).input_size)"),
    },
    "Loss": {
        "name": Key(str, "CrossEntropy", choices=("CrossEntropy", "LabelSmoothingCrossEntropy"),
                    doc="CrossEntropy, or LabelSmoothingCrossEntropy (uses Loss.smoothing)"),
        "smoothing": Key((float, NONE), None, check=(_smoothing, "in [0, 1)"),
                         only_when=key_in("Loss.name", ("LabelSmoothingCrossEntropy",), idle=(0.0,),
                                          how="set Loss.name=LabelSmoothingCrossEntropy to smooth the labels"),
                         doc="label smoothing of LabelSmoothingCrossEntropy (null = 0.1 there; refused with plain "
                             "CrossEntropy)"),
    },
    "Optimizer": {
        "name": Key(str, "Adam", choices=("Adam", "AdamW", "SGD"), doc="Adam, AdamW or SGD (with Optimizer.momentum)"),
        "lr": Key(float, REQUIRED, check=POSITIVE, resume="lr", doc="peak learning rate"),
        "weight_decay": Key(float, 0.0, check=NON_NEGATIVE, doc="L2 (Adam, SGD) or decoupled (AdamW) weight decay"),
        "momentum": Key(float, 0.9, check=NON_NEGATIVE, only_when=key_in("Optimizer.name", ("SGD",)),
                        doc="SGD's momentum"),
        "grad_clip": Key((float, NONE), None, check=POSITIVE, doc="clip the global gradient norm to this; null = off"),
        "scheduler": Key(str, "cosine", choices=("cosine", "constant", "onecycle"),
                         doc="learning-rate schedule, stepped every optimizer step"),
        "warmup_epochs": Key(float, 0.0, check=NON_NEGATIVE,
                             only_when=key_in("Optimizer.scheduler", ("cosine", "constant")),  # onecycle: its own curve
                             doc="linear warm-up epochs before the schedule"),
        "eta_min": Key(float, 0.0, check=NON_NEGATIVE, only_when=key_in("Optimizer.scheduler", ("cosine",)),
                       doc="the cosine schedule's final learning rate"),
        "grad_accum_steps": Key(int, 1, check=POSITIVE,
                                doc="batches whose gradients make one optimizer step; effective batch = "
                                    "Data.batch_size x processes x this"),
        "lr_base_size": Key((int, NONE), None, check=POSITIVE,
                            doc="linear lr scaling: Optimizer.lr is the lr of this global batch, used as "
                                "lr x effective batch / this; null = off"),
    },
    "Data": {
        "dataset": Key(str, "cifar10", choices=("cifar10", "digits", "folder", "filelist"),
                       doc="cifar10, digits (embedded, offline), folder (class subfolders) or filelist (PaddleClas "
                           "'path label' lines)"),
        "data_file": PathKey(doc="cifar10/digits: the CIFAR-format archive; null = the default path"),
        "train_dir": PathKey(doc="folder: training images, one subfolder per class"),
        "val_dir": PathKey(doc="folder: validation images, same class subfolders"),
        "val_split": Key((float, NONE), None, check=(_unit_open, "between 0 and 1 (exclusive)"),
                         doc="folder without val_dir: hold out this fraction of each class"),
        "split_seed": Key(int, 0, only_when=When(
            lambda cfg: cfg["Data"]["val_split"] is not None, lambda cfg: "Data.val_split unset",
            "set Data.val_split to hold out a part of the training images"),
                          doc="which images Data.val_split holds out"),
        "train_list": PathKey(doc="filelist: 'path label' lines of the training images (paths "
                                                 "relative to the list's folder)"),
        "val_list": PathKey(doc="filelist: 'path label' lines of the validation images"),
        "class_id_map_file": PathKey(doc="filelist: 'id name' lines naming the classes"),
        "skip_bad_images": Key(bool, False,
                               doc="skip unreadable images (found up front, or damaged/deleted mid-run; logged and "
                                   "counted) instead of stopping with one error"),
        "transform": Key(str, "conv2former_cifar",
                         doc="preset pipeline (conv2former_cifar, convit, dilateformer, basic: the notebooks'); "
                             "Data.train_ops / eval_ops / image_backend replace its parts"),
        "train_ops": Key((list, NONE), None,
                         doc="training ops, PaddleClas transform_ops style [{OpName: {args}}] (docs/data.md); "
                             "null = the preset's"),
        "eval_ops": Key((list, NONE), None,
                        doc="evaluation ops, the same form; also what export, infer and explain apply; "
                            "null = the preset's"),
        "image_backend": Key((str, NONE), None, check=(lambda v: v in (None, "cv2", "pil"), "cv2, pil or null"),
                             doc="image type the ops receive: cv2 (RGB uint8 array, OpenCV resizing) or pil; "
                                 "null = the preset's"),
        "repeated_aug": Key(int, 1, check=POSITIVE,
                            doc="DeiT's repeated augmentation: copies of each image per epoch (1 = off)"),
        "batch_size": Key(int, REQUIRED, check=POSITIVE, doc="training images per step (per device)"),
        "eval_batch_size": Key(int, REQUIRED, check=POSITIVE, resume="free", doc="images per step when evaluating"),
        "num_workers": Key(int, 0, check=NON_NEGATIVE, resume="free",
                           doc="DataLoader worker processes; 0 = load in the main process"),
        "drop_last": Key(bool, True, doc="drop the last partial training batch (000/004; 002's fit kept it)"),
        "limit": Key((int, NONE), None, check=POSITIVE,
                     doc="use only the first N images of each split (smoke runs); null = all"),
        "mixup_alpha": Key(float, 0.0, check=NON_NEGATIVE, doc="batch MixUp strength; 0 = off"),
        "cutmix_alpha": Key(float, 0.0, check=NON_NEGATIVE, doc="batch CutMix strength; 0 = off"),
        "mix_prob": Key(float, 1.0, check=(_prob, "in [0, 1]"), only_when=MIXING, doc="probability of mixing a batch"),
        "switch_prob": Key(float, 0.5, check=(_prob, "in [0, 1]"), only_when=BOTH_MIXES,
                           doc="probability of CutMix instead of MixUp when both are on"),
        "cutmix_minmax": Key((list, NONE), None,
                             doc="CutMix box sides as [min, max] fractions of the image (timm); null = from lambda"),
        "mix_mode": Key(str, "batch", choices=("batch", "pair", "elem"),
                        doc="MixUp/CutMix lambda per batch, per mirrored pair or per image (timm's mode)"),
    },
    "Eval": {
        "grid_images": Key(int, 18, check=NON_NEGATIVE, doc="first N test images drawn in predictions.png; 0 = none"),
        "model": PathKey(doc="evaluate an exported model (prefix, file or folder) through its verified backend "
                             "(Eval.backend)"),
        "use_predictor": Key(bool, False, doc="export Global.pretrained_model to a temp folder and evaluate that"),
        "backend": Key(str, "auto", choices=BACKENDS, only_when=through_predictor("Eval"),
                       doc="inference backend of Eval.model/use_predictor; auto = the fastest one export verified"),
        "output": PathKey(doc="folder of eval.json, confusion_matrix.png, reliability.png and predictions.png; null = "
                              "the run folder. An evaluation of other weights already there is kept: the new files "
                              "are named after the weights (eval_final_model.json, ...)"),
        "calibrate": Key(bool, False,
                         doc="fit temperature scaling (one T > 0 minimising the NLL) on the evaluated split: T, the ECE"
                             " after it and its reliability bars in eval.json/reliability.png; ppvit export records T "
                             "for infer"),
    },
    "Export": {
        "output": PathKey(doc="folder of the exported model; null = <run folder>/inference"),
        "onnx": Key(bool, True, doc="also write <prefix>.onnx (where paddle2onnx is installed)"),
        "check_images": Key(int, 256, check=NON_NEGATIVE,
                            doc="first N test images every backend must classify as dygraph does (>= 99.5% top-1 "
                                "agreement); 0 = off"),
        "temperature": Key((float, NONE), None, check=POSITIVE,
                           doc="softmax temperature recorded for infer (scores = softmax(logits / T), raw ones kept); "
                               "null = the one ppvit eval -o Eval.calibrate=true fitted for these weights, if any"),
    },
    "Infer": {
        "model": PathKey(doc="exported model: prefix, one of its files or its folder; null = <run "
                                            "folder>/inference"),
        "images": PathKey((str, list, NONE), doc="image files and/or folders to classify"),
        "topk": Key(int, 5, check=POSITIVE, doc="classes printed per image"),
        "batch_size": Key(int, 32, check=POSITIVE, doc="images per predictor call"),
        "grid_images": Key(int, 18, check=NON_NEGATIVE, doc="first N images drawn in infer_predictions.png; 0 = none"),
        "output": PathKey(doc="folder of infer.json and the grid; null = the run folder"),
        "backend": Key(str, "auto", choices=BACKENDS, doc="inference backend; auto = the fastest one export verified"),
    },
    "Explain": {
        "indices": Key((int, list), [0], doc="test-set images to explain (when Explain.images is null)"),
        "images": PathKey((str, list, NONE), doc="image files and/or folders to explain instead of test images"),
        "top_k": Key(int, 1, check=POSITIVE,
                     doc="most probable classes explained (plus the true class of test images)"),
        "num_samples": Key(int, 1000, check=(lambda v: v >= 2, ">= 2"), doc="perturbed images per explanation"),
        "batch_size": Key(int, 50, check=POSITIVE, doc="perturbed images per forward pass"),
        "model": PathKey(doc="run LIME through this exported model (its verified backend: Explain.backend)"),
        "use_predictor": Key(bool, False,
                             doc="export Global.pretrained_model to a temp folder and run LIME through it"),
        "backend": Key(str, "auto", choices=BACKENDS, only_when=through_predictor("Explain"),
                       doc="inference backend of Explain.model/use_predictor; auto = the fastest one export verified"),
        "output": PathKey(doc="folder of the figures and explain.json; null = <run folder>/explain"),
        "kernel_size": Key((float, NONE), None, check=POSITIVE,
                           doc="quickshift's kernel_size (null = scaled to the image: interpretdl's 5 from 60 px up, "
                               "side/12 below); smaller = more superpixels"),
        "max_dist": Key((float, NONE), None, check=POSITIVE,
                        doc="quickshift's max_dist (null = 2 x kernel_size: interpretdl's 10 from 60 px up); smaller = "
                            "more superpixels"),
        "ratio": Key((float, NONE), None, check=(_unit_closed, "in [0, 1]"),
                     doc="quickshift's colour/space balance ratio (null = interpretdl's 1.0)"),
        "method": Key(str, "lime", choices=("lime", "gradcam", "both"),
                      doc="lime, gradcam (needs the dygraph weights, also with Explain.model) or both"),
    },
    "App": {
        "model": PathKey(doc="exported model served: prefix, one of its files or its folder; null = "
                             "<run folder>/inference"),
        "backend": Key(str, "auto", choices=BACKENDS, doc="inference backend; auto = the fastest one export verified"),
        "host": Key(str, "127.0.0.1",
                    doc="interface the app listens on; 127.0.0.1 = this machine only, 0.0.0.0 = every interface"),
        "port": Key(int, 7860, check=(lambda v: 0 < v < 65536, "a TCP port (1-65535)"),
                    doc="TCP port of the app (http://App.host:App.port)"),
        "top_k": Key(int, 5, check=POSITIVE, doc="classes shown per image"),
        "num_samples": Key(int, 300, check=(lambda v: v >= 2, ">= 2"), doc="LIME's perturbed images per explanation"),
        "images": PathKey((str, list, NONE),
                      doc="example images to pick from (files and/or folders); null = App.examples test images"),
        "examples": Key(int, 8, check=NON_NEGATIVE,
                        doc="test images offered as examples when App.images is null; 0 = none"),
    },
}
# what each section is, and what its keys are for (the headings of -h and docs/config.md)
SECTION_DOCS = {
    "Global": "the run: device, seed, epochs, run folder, weights, resume, logging",
    "Arch": "the model; any other Arch key is passed to the model builder (e.g. drop_path_rate, in_chans)",
    "Loss": "the training loss",
    "Optimizer": "optimizer and learning-rate schedule",
    "Data": "dataset, preprocessing, batches, MixUp/CutMix",
    "Eval": "tools/eval.py",
    "Export": "tools/export.py",
    "Infer": "tools/infer.py",
    "Explain": "tools/explain.py (LIME and Grad-CAM)",
    "App": "ppvit app (tools/app.py): a local web app over the run's exported model",
}
OPEN_SECTIONS = ("Arch",)  # sections whose extra keys are model kwargs
FREE_SECTIONS = ("Eval", "Export", "Infer", "Explain", "App")  # the verbs' settings: a resume may change any of them


def _closest(word, options):
    """The option closest to ``word`` (difflib), ignoring case (``sgd`` -> SGD), or None."""
    by_lower = {str(o).lower(): str(o) for o in options}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def _suggest(word, options):
    """`` (did you mean X?)`` for the closest option (``_closest``), or ``""``."""
    close = _closest(word, options)
    return f" (did you mean {close}?)" if close else ""


def _config_near_miss(path):
    """``; did you mean <folder>/<file>?`` for the YAML file closest to ``path``'s name in its folder
    (``configs/quickstart.yml`` -> ``configs/quickstart.yaml``), else in that folder's ``configs/``
    (``quickstart.yaml`` -> ``configs/quickstart.yaml``), or ``""``."""
    folder, name = os.path.split(path)
    for where in (folder, os.path.join(folder, "configs")):
        try:
            files = [f for f in os.listdir(where or ".") if f.endswith((".yaml", ".yml"))
                     and os.path.isfile(os.path.join(where or ".", f))]
        except OSError:  # no such folder
            continue
        close = _closest(name, files)
        if close:
            return f"; did you mean {os.path.join(where, close)}?"
    return ""


def _coerce(section, key, spec, value):
    """Check ``value`` against ``spec``; ints are accepted where floats are expected."""
    name = f"{section}.{key}"
    if float in spec.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if float in spec.types and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept what Python reads as a number
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise ConfigError(f"{name} must be {spec.type_names()}, got {value!r} ({type(value).__name__})")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
                          + _suggest(value, spec.choices))
    if spec.check is not None and value is not None and not spec.check[0](value):
        raise ConfigError(f"{name} must be {spec.check[1]}, got {value!r}")
    if spec.path and isinstance(value, str):
        value = expand_path(value, name)
    elif spec.path and isinstance(value, list):
        value = [expand_path(v, name) if isinstance(v, str) else v for v in value]
    return value


def validate(cfg):
    """Fill defaults and check every key; returns a new dict. Raises ConfigError."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"a config must be a mapping of sections ({', '.join(SCHEMA)}), "
                          f"got {type(cfg).__name__}")
    for section in cfg:
        if section not in SCHEMA:
            raise ConfigError(f"unknown config section {section!r}{_suggest(section, SCHEMA)}; "
                              f"accepted sections: {', '.join(SCHEMA)}")
    _check_size_keys(cfg)
    out = {}
    for section, keys in SCHEMA.items():
        given = cfg.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config section {section} must be a mapping of keys, got {given!r}")
        if section == "Arch":  # 003's spellings image_size / in_channels, as create_model accepts them
            given = _timm_names(given)
        out[section] = {}
        for key, value in given.items():
            if key not in keys and section not in OPEN_SECTIONS:
                raise ConfigError(f"unknown key {section}.{key}{_suggest(key, keys)}; accepted keys of "
                                  f"{section}: {', '.join(keys)}")
        for key, spec in keys.items():
            if key in given:
                out[section][key] = _coerce(section, key, spec, given[key])
            elif spec.default is REQUIRED:
                raise ConfigError(f"missing required key {section}.{key} ({spec.type_names()})")
            else:
                out[section][key] = copy.deepcopy(spec.default)
        for key, value in given.items():  # model kwargs, passed through as written
            if key not in keys:
                out[section][key] = value
    _check_model(out["Arch"])
    _check_channels(out["Arch"])
    _fill_input_size(out)
    check_no_effect(cfg, out)
    _check_loss(out["Loss"])
    _check_transform(out)
    return out


def check_no_effect(given, cfg):
    """Refuse a key set (in ``given``: the config file and ``-o``) to a value other than its default where the
    other settings of ``cfg`` (validated) leave it without effect (``Key.only_when``): a setting that does
    nothing must not sit in a run's config.yaml as if it had. Raises ``ConfigError`` naming the key, the
    setting that decides and both ways out."""
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            when = spec.only_when
            if when is None or key not in (given.get(section) or {}):
                continue
            value = cfg[section][key]
            if _same_value(value, spec.default) or any(_same_value(value, v) for v in when.idle):
                continue
            if not when.test(cfg):
                raise ConfigError(f"{section}.{key}={_show(value)} has no effect with {when.state(cfg)}: "
                                  f"{when.how}, or remove {section}.{key} (-o '~{section}.{key}')")


def _show(value):
    return "null" if value is None else str(value)


def _check_loss(loss):
    """``Loss.smoothing`` only where the loss uses it (``check_no_effect`` refuses it elsewhere): defaulted to
    0.1 for LabelSmoothingCrossEntropy, left out of the config for plain CrossEntropy."""
    if loss["name"] == "LabelSmoothingCrossEntropy":
        loss["smoothing"] = 0.1 if loss["smoothing"] is None else loss["smoothing"]
        return
    loss.pop("smoothing")


def _check_transform(cfg):
    """The preset exists, every op list resolves (known ops and arguments, PIL ops on the PIL backend) and the
    eval list ends in its normalisation, before anything is built."""
    from ..data.errors import DataError
    from ..data.transforms import data_config, pipeline_spec, split_normalization

    data = data_config(cfg)
    try:
        pipeline_spec(data, "train")
        # the eval list ends in its normalisation: export, LIME and the figures read scale/mean/std from it
        split_normalization(pipeline_spec(data, "test")[1])
    except DataError as e:
        raise ConfigError(str(e)) from None


def _check_size_keys(cfg):
    """One key for the input size: ``Arch.img_size``. ``Data.image_size`` is refused with the fix."""
    data = cfg.get("Data")
    if isinstance(data, dict) and "image_size" in data:
        raise ConfigError(
            f"Data.image_size ({data['image_size']!r}) is not a key: the input size is set once, by "
            "Arch.img_size (the model is built for it and the data pipeline resizes to it); write "
            f"Arch.img_size: {data['image_size']!r} in the config or pass -o Arch.img_size={data['image_size']}")


def _timm_names(arch):
    from ..models.registry import rename_old_kwargs

    try:
        return rename_old_kwargs(arch)
    except TypeError as e:
        raise ConfigError(f"Arch: {e}") from None


def _fill_input_size(cfg):
    """``Arch.img_size`` defaults to the model's cfg (the data pipelines resize to it)."""
    from ..models import get_model_cfg

    arch = cfg["Arch"]
    if arch["img_size"] is None:
        _, h, w = get_model_cfg(arch["name"]).input_size  # every registered default is square
        arch["img_size"] = h


def _check_channels(arch):
    """Configs train, evaluate, export and serve 3-channel RGB images (a grayscale file is read as three equal
    channels), so a model taking another channel count could never be fed: refused here, in one line, rather
    than by Paddle's convolution at the first batch."""
    chans = arch.get("in_chans", 3)
    if chans != 3:
        raise ConfigError(f"Arch.in_chans={chans!r}: ppvit's data pipelines, export and inference give the model "
                          "3-channel RGB images (grayscale images are read as three equal channels and train as "
                          "they are), so configs need in_chans=3; remove Arch.in_chans. A model of another channel "
                          "count is for the Python API (ppvit.create_model(..., in_chans=1))")


def _check_model(arch):
    """A registered ``Arch.name``, and keyword arguments its model accepts with fitting types (checked
    against the model class's signature and its variant's values, without building it)."""
    from ..models.arguments import check_arguments
    from ..models.registry import _MODELS, is_model, unknown_model_message

    name = arch["name"]
    if not is_model(name):
        raise ConfigError("Arch.name: " + unknown_model_message(name))
    kwargs = {k: v for k, v in arch.items() if k not in ("name", "num_classes") and not (k == "img_size" and v is None)}
    problems = check_arguments(name, _MODELS[name], dict(kwargs, num_classes=arch["num_classes"]))
    if problems:
        raise ConfigError("; ".join(f"Arch.{key} {msg}" if msg.startswith("must") else f"Arch.{key}: {msg}"
                                    for key, msg in problems))


REMOVE = object()  # parse_override's value for ``~Section.key``: take the key out of the config


def parse_override(text):
    """``'Section.key=value'`` -> (section, key, yaml-parsed value); ``'~Section.key'`` -> (section, key, REMOVE):
    the key is taken out of the config (back to its default; an ``Arch`` key back to the model's)."""
    if text.startswith("~") and "=" not in text:
        parts = text[1:].strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {text!r}: removing a key is ~Section.key (e.g. -o '~Arch.dim')")
        return parts[0], parts[1], REMOVE
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like Section.key=value (or ~Section.key to remove a key)")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be Section.key (e.g. Global.epochs=10); "
                          f"sections: {', '.join(SCHEMA)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_one_line(e)})") from None
    if _drops_a_comment(raw, value):
        # YAML reads " # ..." as a comment: "out # tmp" would silently become "out"
        raise ConfigError(f"override {text!r}: YAML reads everything from ' #' on as a comment, which would cut "
                          f"the value; quote it to keep the '#' (-o '{path.strip()}=\"{raw.strip()}\"') or "
                          "remove the comment")
    return parts[0], parts[1], value


def _drops_a_comment(raw, value):
    """True when YAML parsed ``raw`` with a comment left out (a '#' at the start or after a blank that
    is not inside the value it returned)."""
    import re

    if not re.search(r"(^|\s)#", raw):
        return False
    return "#" not in yaml.safe_dump(value)


def _one_line(err):
    return " ".join(str(err).split())


def read_yaml(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}{_config_near_miss(path)}")
    try:
        with open(path, encoding="utf-8-sig") as f:  # UTF-8, with or without a byte-order mark
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_one_line(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}): save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return {} if cfg is None else cfg


SAVED_CONFIG = "config.yaml"  # a run folder's config, as it trained (engine/trainer.py writes it)
# Global keys of a saved config that describe how a run was launched; left out when a run folder is the config
RUN_LAUNCH_KEYS = ("pretrained_model", "checkpoints", "overwrite", "extend")


def saved_run(path):
    """The run folder that ``path`` names, when it is one (a folder with a ``config.yaml``, or that file in it
    beside the run's checkpoint or weights), else None."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    folder = os.path.dirname(path) or "."
    if os.path.basename(path) == SAVED_CONFIG and any(
            os.path.isfile(os.path.join(folder, f)) for f in ("latest.pdstate", "best_model.pdparams")):
        return folder
    return None


def load_config(path=None, overrides=(), base=None):
    """Read ``path`` (or start from the dict ``base``), apply ``-o`` overrides, validate.

    ``path`` may be a run folder (or its ``config.yaml``): the config the run trained with, overrides included,
    for eval/export/infer/explain on that run (its weights: ``RUN_LAUNCH_KEYS`` are left out, so the weights it
    started from are not taken for its own); its results then go to that folder wherever the command runs.
    ``-o ~Section.key`` takes a key out (back to its default).

    The result carries the run name (the config file's stem) in ``Global.run_name``, which decides the run
    folder ``Global.output_dir/<run_name>``.
    """
    if path is not None:
        path = expand_path(path, "-c")
    run = saved_run(path) if path is not None else None
    if run is not None:
        saved = os.path.join(run, SAVED_CONFIG)
        if not os.path.isfile(saved):
            raise ConfigError(f"{run} is a folder without a {SAVED_CONFIG}: -c takes a YAML config file, or a run "
                              f"folder that training wrote (it holds the run's {SAVED_CONFIG})")
        cfg = read_yaml(saved)
        if isinstance(cfg, dict) and isinstance(cfg.get("Global"), dict):  # the run's folder, from anywhere
            run = os.path.normpath(run)
            cfg["Global"]["output_dir"], cfg["Global"]["run_name"] = os.path.dirname(run) or ".", os.path.basename(run)
            # what the run started from or how it was launched, not what it is: its own weights are the run's
            # (eval/export/explain take best_model.pdparams), and a train -c RUN neither resumes nor replaces it
            for key in RUN_LAUNCH_KEYS:
                cfg["Global"].pop(key, None)
        run_name = os.path.basename(os.path.normpath(run))
    elif path is not None:
        cfg = read_yaml(path)
        run_name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    else:
        cfg = copy.deepcopy(base or {})
        run_name = None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections ({', '.join(SCHEMA)}), "
                          f"got {type(cfg).__name__}")
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SCHEMA:
            raise ConfigError(f"override {text!r}: unknown section {section!r}{_suggest(section, SCHEMA)}; "
                              f"accepted sections: {', '.join(SCHEMA)}")
        if not isinstance(cfg.get(section), dict):
            cfg[section] = {}
        if value is REMOVE:
            if key not in cfg[section]:
                raise ConfigError(f"override {text!r}: {section}.{key} is not set"
                                  + (f" in {path}" if path is not None else "")
                                  + _suggest(key, list(cfg[section])))
            del cfg[section][key]
        else:
            cfg[section][key] = value
    cfg = validate(cfg)
    cfg["Global"]["run_name"] = cfg["Global"]["run_name"] or run_name or cfg["Arch"]["name"]
    return cfg


def run_dir(cfg):
    """The run folder: ``Global.output_dir/<config stem>``."""
    return os.path.join(cfg["Global"]["output_dir"], cfg["Global"]["run_name"])


def model_kwargs(cfg):
    """Arch keys other than name/num_classes (``img_size`` included): the model builder's keyword arguments."""
    return {k: v for k, v in cfg["Arch"].items() if k not in ("name", "num_classes")}


def resume_changes(saved, new):
    """Keys whose value differs between the config a run ran with (``saved``) and the one resuming it:
    ``{"same": [(key, old, new)], "lr": [...], "free": [...]}`` by what a resume may do with them (``Key.resume``;
    ``Arch`` keys and unknown ones are "same", the verbs' sections "free"). ``Global.epochs`` is left to the
    caller, which knows how far the run got."""
    out = {"same": [], "lr": [], "free": []}
    for section in sorted(set(saved) | set(new), key=lambda s: list(SCHEMA).index(s) if s in SCHEMA else 99):
        old_keys, new_keys = saved.get(section) or {}, new.get(section) or {}
        for key in list(old_keys) + [k for k in new_keys if k not in old_keys]:
            if section == "Global" and key == "epochs":
                continue
            missing = object()
            old, cur = old_keys.get(key, missing), new_keys.get(key, missing)
            if old is missing and key in SCHEMA.get(section, {}):
                old = SCHEMA[section][key].default  # a key the saved run's version did not have
            if _same_value(old, cur):
                continue
            spec = SCHEMA.get(section, {}).get(key)
            kind = "free" if section in FREE_SECTIONS else spec.resume if spec is not None else "same"
            out[kind].append((f"{section}.{key}", None if old is missing else old, None if cur is missing else cur))
    return out


def _same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        return float(a) == float(b)
    return a == b


class _ReadableDumper(yaml.SafeDumper):
    """Block mappings (one key per line) with lists inline (``depths: [1, 1]``)."""


_ReadableDumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dump(cfg, header=None):
    """YAML of a validated config, so that it loads again as a config: one key per line, in the schema's order,
    lists inline; ``header``: comment lines put first."""
    text = yaml.dump(cfg, Dumper=_ReadableDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=120)
    text = "\n".join(line if line.startswith(" ") or not line.strip() else "\n" + line
                     for line in text.splitlines()).lstrip("\n") + "\n"  # a blank line between sections
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text
