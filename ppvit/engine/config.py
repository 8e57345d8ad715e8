"""PaddleClas-style configs: ``-c file.yaml`` plus repeated ``-o Section.key=value`` overrides.

The schema below is the single description of every key: its type, default and accepted values.
Any mistake (bad YAML, unknown section or key, wrong type, value out of range, unknown model) raises
``ConfigError`` with one message that names the key and what is accepted; the tools print it and exit 2.
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
    """One config key: accepted types, default, optional choices and a range check.

    ``resume``: whether a resumed run may change it. ``"same"`` keys decide the computation (a resume that
    changes one is refused); ``"free"`` keys cannot change the result (paths, workers, logging);
    ``"lr"`` is the learning rate, which may change and applies from the first resumed step.
    """

    def __init__(self, types, default=REQUIRED, choices=None, check=None, doc="", resume="same"):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.choices = choices
        self.check = check  # (predicate, "what it must be")
        self.doc = doc
        self.resume = resume

    def type_names(self):
        names = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null", list: "list"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


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
# tools/eval|infer|explain through a predictor; ppvit.deploy.backends names them (not imported: paddle-free)
BACKENDS = ("auto", "paddle", "paddle_bf16", "onnxruntime")
POSITIVE = (_positive, "> 0")
NON_NEGATIVE = (_non_negative, ">= 0")

SCHEMA = {
    "Global": {
        "device": Key(str, "auto", choices=("auto", "gpu", "cpu"), resume="free"),
        "seed": Key(int, 42),
        "epochs": Key(int, REQUIRED, check=POSITIVE),
        "output_dir": Key(str, "./output", resume="free"),
        "run_name": Key((str, NONE), None, resume="free"),  # run folder name; null = the config file's stem
        # weights to start from (training) or to use (eval, export, explain); a resume takes its own
        "pretrained_model": Key((str, NONE), None, resume="free"),
        "checkpoints": Key((str, NONE), None, resume="free"),
        # a run folder that holds a run is never trained into again, unless resumed or this says so
        "overwrite": Key(bool, False, resume="free"),
        # resume a finished run for more epochs (Global.epochs in all): the schedule restarts over the added ones
        "extend": Key(bool, False, resume="free"),
        "eval_interval": Key(int, 1, check=POSITIVE, resume="free"),
        "print_interval": Key(int, 10, check=POSITIVE, resume="free"),
        # steps between mid-epoch `latest` checkpoints; 0 = only at the end of each epoch
        "save_interval": Key(int, 0, check=NON_NEGATIVE, resume="free"),
        "use_amp": Key(bool, False),
        # several GPUs: BatchNorm statistics computed over the global batch (paddle.nn.SyncBatchNorm); without
        # it each rank normalises by its own batch and the running statistics are averaged before every
        # evaluation and save. Paddle has no CPU kernel for it.
        "sync_bn": Key(bool, False),
        "ema_decay": Key((float, NONE), None, check=(_unit_open, "between 0 and 1 (exclusive)")),
        "use_visualdl": Key(bool, False, resume="free"),  # VisualDL scalars in <run dir>/vdl (pip install visualdl)
    },
    "Arch": {
        "name": Key(str, REQUIRED),
        "num_classes": Key(int, REQUIRED, check=POSITIVE),
        # the one input-size key: the model is built for it and the data pipeline resizes to it;
        # null = the model's default (get_model_cfg(Arch.name).input_size)
        "img_size": Key((int, NONE), None, check=POSITIVE),
        # any other key is passed to the model builder
    },
    "Loss": {
        "name": Key(str, "CrossEntropy", choices=("CrossEntropy", "LabelSmoothingCrossEntropy")),
        # LabelSmoothingCrossEntropy's; null = 0.1 there. Plain CrossEntropy refuses it and the validated
        # (and saved) config leaves it out, so no key shows a setting that does nothing
        "smoothing": Key((float, NONE), None, check=(_smoothing, "in [0, 1)")),
    },
    "Optimizer": {
        "name": Key(str, "Adam", choices=("Adam", "AdamW", "SGD")),
        "lr": Key(float, REQUIRED, check=POSITIVE, resume="lr"),
        "weight_decay": Key(float, 0.0, check=NON_NEGATIVE),
        "momentum": Key(float, 0.9, check=NON_NEGATIVE),
        "grad_clip": Key((float, NONE), None, check=POSITIVE),
        "scheduler": Key(str, "cosine", choices=("cosine", "constant", "onecycle")),
        "warmup_epochs": Key(float, 0.0, check=NON_NEGATIVE),
        "eta_min": Key(float, 0.0, check=NON_NEGATIVE),
    },
    "Data": {
        "dataset": Key(str, "cifar10", choices=("cifar10", "digits", "folder", "filelist")),
        "data_file": Key((str, NONE), None),
        # your own images (ppvit/data/folder.py): folder = one subfolder per class; filelist = PaddleClas's
        # `path label` lines (paths relative to the list's folder) + optional `id name` class_id_map_file
        "train_dir": Key((str, NONE), None),
        "val_dir": Key((str, NONE), None),
        "val_split": Key((float, NONE), None, check=(_unit_open, "between 0 and 1 (exclusive)")),
        "split_seed": Key(int, 0),  # which images Data.val_split holds out
        "train_list": Key((str, NONE), None),
        "val_list": Key((str, NONE), None),
        "class_id_map_file": Key((str, NONE), None),
        "skip_bad_images": Key(bool, False),  # drop unreadable images (logged) instead of stopping
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
        "batch_size": Key(int, REQUIRED, check=POSITIVE),
        "eval_batch_size": Key(int, REQUIRED, check=POSITIVE, resume="free"),
        "num_workers": Key(int, 0, check=NON_NEGATIVE, resume="free"),
        "drop_last": Key(bool, True),  # drop the last partial training batch (000/004); 002's fit kept it
        "limit": Key((int, NONE), None, check=POSITIVE),
        "mixup_alpha": Key(float, 0.0, check=NON_NEGATIVE),
        "cutmix_alpha": Key(float, 0.0, check=NON_NEGATIVE),
        "mix_prob": Key(float, 1.0, check=(_prob, "in [0, 1]")),
        "switch_prob": Key(float, 0.5, check=(_prob, "in [0, 1]")),
        "cutmix_minmax": Key((list, NONE), None,
                             doc="CutMix box sides as [min, max] fractions of the image (timm); null = from lambda"),
        "mix_mode": Key(str, "batch", choices=("batch", "pair", "elem"),
                        doc="MixUp/CutMix lambda per batch, per mirrored pair or per image (timm's mode)"),
    },
    # tools/eval.py, export.py, infer.py, explain.py (ppvit/commands/)
    "Eval": {
        "grid_images": Key(int, 18, check=NON_NEGATIVE),  # first N test images in predictions.png; 0 = none
        "model": Key((str, NONE), None),  # an exported model (prefix, file or folder), run by its verified backend
        "use_predictor": Key(bool, False),  # export Global.pretrained_model to a temp folder and evaluate that
        "backend": Key(str, "auto", choices=BACKENDS),  # predictor backend: auto = fastest verified at export
        # folder of eval.json and its figures; null = the run dir. Never replaces an evaluation of other weights
        # there: those files are named after the weights (ppvit.commands.evaluate.eval_outputs)
        "output": Key((str, NONE), None),
    },
    "Export": {
        "output": Key((str, NONE), None),  # folder; null = <run dir>/inference
        "onnx": Key(bool, True),  # also <prefix>.onnx where paddle2onnx is installed
        # the first N test images every backend must classify as dygraph does (>= 99.5% top-1 agreement); 0: off
        "check_images": Key(int, 256, check=NON_NEGATIVE),
    },
    "Infer": {
        "model": Key((str, NONE), None),  # exported prefix, one of its files or its folder; null = <run>/inference
        "images": Key((str, list, NONE), None),  # image files and/or folders
        "topk": Key(int, 5, check=POSITIVE),
        "batch_size": Key(int, 32, check=POSITIVE),
        "grid_images": Key(int, 18, check=NON_NEGATIVE),  # first N in infer_predictions.png; 0 = none
        "output": Key((str, NONE), None),  # folder of infer.json and the grid; null = the run dir
        "backend": Key(str, "auto", choices=BACKENDS),  # auto | paddle | paddle_bf16 | onnxruntime
    },
    "Explain": {
        "indices": Key((int, list), [0]),  # test-set images to explain (when Explain.images is null)
        "images": Key((str, list, NONE), None),  # image files and/or folders instead of test images
        "top_k": Key(int, 1, check=POSITIVE),  # predicted classes explained (plus the true one of test images)
        "num_samples": Key(int, 1000, check=(lambda v: v >= 2, ">= 2")),
        "batch_size": Key(int, 50, check=POSITIVE),
        "model": Key((str, NONE), None),  # an exported model: run LIME through its verified backend
        "use_predictor": Key(bool, False),  # export Global.pretrained_model to a temp folder and use that
        "backend": Key(str, "auto", choices=BACKENDS),  # predictor backend (Explain.model / use_predictor)
        "output": Key((str, NONE), None),  # folder of the PNGs; null = <run dir>/explain
        # quickshift superpixels; null = interpretdl's (QUICKSHIFT_INTERPRETDL: 5, 10, 1.0). Smaller kernel_size
        # and max_dist give more superpixels (small images need them: LIME warns below 10)
        "kernel_size": Key((float, NONE), None, check=POSITIVE),
        "max_dist": Key((float, NONE), None, check=POSITIVE),
        "ratio": Key((float, NONE), None, check=(_unit_closed, "in [0, 1]")),
    },
}
OPEN_SECTIONS = ("Arch",)  # sections whose extra keys are model kwargs
FREE_SECTIONS = ("Eval", "Export", "Infer", "Explain")  # the verbs' settings: a resume may change any of them
# keys of the validated config that no user sets: derived from others by ``validate``
DERIVED = {("Data", "image_size"): "Arch.img_size", ("Data", "arch"): "Arch.name"}


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
    _fill_input_size(out)
    _check_loss(out["Loss"])
    _check_transform(out["Data"])
    return out


def _check_loss(loss):
    """``Loss.smoothing`` only where the loss uses it: defaulted to 0.1 for LabelSmoothingCrossEntropy, refused
    (when > 0) and left out of the config for plain CrossEntropy."""
    if loss["name"] == "LabelSmoothingCrossEntropy":
        loss["smoothing"] = 0.1 if loss["smoothing"] is None else loss["smoothing"]
        return
    smoothing = loss.pop("smoothing")
    if smoothing:
        raise ConfigError(f"Loss.smoothing={smoothing} has no effect with Loss.name={loss['name']} (plain "
                          "cross-entropy): set Loss.name=LabelSmoothingCrossEntropy to smooth the labels, or "
                          "remove Loss.smoothing")


def _check_transform(data):
    """The preset exists, every op list resolves (known ops and arguments, PIL ops on the PIL backend) and the
    eval list ends in its normalisation, before anything is built."""
    from ..data.errors import DataError
    from ..data.transforms import pipeline_spec, split_normalization

    try:
        pipeline_spec(data, "train")
        # the eval list ends in its normalisation: export, LIME and the figures read scale/mean/std from it
        split_normalization(pipeline_spec(data, "test")[1])
    except DataError as e:
        raise ConfigError(str(e)) from None


def _check_size_keys(cfg):
    """One key for the input size: ``Arch.img_size``. The older ``Data.image_size`` is refused with the fix."""
    data = cfg.get("Data")
    if isinstance(data, dict) and "image_size" in data:
        raise ConfigError(
            f"Data.image_size ({data['image_size']!r}) is no longer a key: the input size is set once, by "
            "Arch.img_size (the model is built for it and the data pipeline resizes to it); write "
            f"Arch.img_size: {data['image_size']!r} in the config or pass -o Arch.img_size={data['image_size']}")


def _timm_names(arch):
    from ..models.registry import rename_old_kwargs

    try:
        return rename_old_kwargs(arch)
    except TypeError as e:
        raise ConfigError(f"Arch: {e}") from None


def _fill_input_size(cfg):
    """``Arch.img_size`` defaults to the model's cfg; ``Data.image_size`` is derived from it (for the data
    pipeline and the readers of the validated config), never set by a user."""
    from ..models import get_model_cfg

    arch = cfg["Arch"]
    if arch["img_size"] is None:
        _, h, w = get_model_cfg(arch["name"]).input_size  # every registered default is square
        arch["img_size"] = h
    cfg["Data"]["image_size"] = arch["img_size"]
    cfg["Data"]["arch"] = arch["name"]  # whose pretrained_cfg gives the mean/std/crop_pct ops do not write


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


def parse_override(text):
    """``'Section.key=value'`` -> (section, key, yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like Section.key=value")
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
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_one_line(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return {} if cfg is None else cfg


def load_config(path=None, overrides=(), base=None):
    """Read ``path`` (or start from the dict ``base``), apply ``-o`` overrides, validate.

    The result carries the run name (the config file's stem) in ``Global.run_name``, which decides the run
    folder ``Global.output_dir/<run_name>``.
    """
    if path is not None:
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
            if (section == "Global" and key == "epochs") or (section, key) in DERIVED:
                continue
            missing = object()
            old, cur = old_keys.get(key, missing), new_keys.get(key, missing)
            if old is missing and (section, key) == ("Arch", "img_size"):
                old = (saved.get("Data") or {}).get("image_size", missing)  # saved when Data.image_size set it
            if old is missing and key in SCHEMA.get(section, {}):
                old = SCHEMA[section][key].default  # saved before the key existed
            if _same_value(old, cur):
                continue
            spec = SCHEMA.get(section, {}).get(key)
            kind = "free" if section in FREE_SECTIONS else spec.resume if spec is not None else "same"
            out[kind].append((f"{section}.{key}", None if old is missing else old, None if cur is missing else cur))
    return out


def _same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def dump(cfg):
    """YAML of a validated config, without the derived keys, so that it loads again as a config."""
    cfg = copy.deepcopy(cfg)
    for section, key in DERIVED:
        cfg.get(section, {}).pop(key, None)
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
