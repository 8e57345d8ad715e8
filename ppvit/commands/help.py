"""What ``ppvit <verb> -h`` (and ``python tools/<verb>.py -h``) prints: the verb's description, the config keys
it reads, each with its type, default, accepted values (from the schema, ``ppvit.engine.config.SCHEMA``) and a
one-line meaning (``KEY_DOCS`` below), and an example command.

``KEY_DOCS`` holds one line for every key of the schema; a test keeps the two in step.
"""
import textwrap

import yaml

__all__ = ["KEY_DOCS", "VERB_HELP", "ENVIRONMENT", "describe_keys", "verb_description", "verb_epilog"]

KEY_DOCS = {
    "Global.device": "auto = the GPU when Paddle has one, else the CPU",
    "Global.seed": "seeds Paddle, numpy and Python (weights init, data order, augmentation, LIME)",
    "Global.epochs": "training epochs (the learning-rate schedule spans them)",
    "Global.output_dir": "parent folder of the run folders",
    "Global.run_name": "run folder name under output_dir; null = the config file's name (quickstart.yaml -> "
                       "output/quickstart)",
    "Global.pretrained_model": "weights (.pdparams/.safetensors) to start training from, or to evaluate, "
                               "export and explain; null = the run's best_model.pdparams",
    "Global.checkpoints": "resume a run: its folder or its latest prefix",
    "Global.overwrite": "train into a run folder that already holds a run, replacing it (else refused)",
    "Global.extend": "resume a finished run for more epochs (Global.epochs = the new total); the schedule restarts "
                     "over the added ones",
    "Global.sync_bn": "several GPUs: BatchNorm statistics over the global batch (SyncBatchNorm; no CPU kernel)",
    "Global.eval_interval": "validate every N epochs (and always after the last)",
    "Global.print_interval": "a log line (step, lr, loss, img/s, eta) every N training steps, on the console "
                             "and in train.log, as PaddleClas's print_batch_step",
    "Global.save_interval": "also write the resumable latest.* checkpoint every N steps inside an epoch; "
                            "0 = only at the end of each epoch",
    "Global.use_amp": "mixed precision (GPU)",
    "Global.ema_decay": "keep an exponential moving average of the weights with this decay; null = off",
    "Global.use_visualdl": "also log scalars to <run folder>/vdl for VisualDL (pip install visualdl)",
    "Arch.name": "a registered model name (ppvit.list_models())",
    "Arch.num_classes": "classes of the classifier head",
    "Arch.img_size": "input side in pixels: the model is built for it and the data resized to it; "
                     "null = the model's default",
    "Loss.name": "CrossEntropy, or LabelSmoothingCrossEntropy (uses Loss.smoothing)",
    "Loss.smoothing": "label smoothing of LabelSmoothingCrossEntropy (refused with plain CrossEntropy)",
    "Optimizer.name": "Adam, AdamW or SGD (with Optimizer.momentum)",
    "Optimizer.lr": "peak learning rate",
    "Optimizer.weight_decay": "L2 (Adam, SGD) or decoupled (AdamW) weight decay",
    "Optimizer.momentum": "SGD's momentum",
    "Optimizer.grad_clip": "clip the global gradient norm to this; null = off",
    "Optimizer.scheduler": "learning-rate schedule, stepped every batch",
    "Optimizer.warmup_epochs": "linear warm-up epochs before the schedule",
    "Optimizer.eta_min": "the cosine schedule's final learning rate",
    "Data.dataset": "cifar10, digits (embedded, offline), folder (class subfolders) or filelist "
                    "(PaddleClas 'path label' lines)",
    "Data.data_file": "cifar10/digits: the CIFAR-format archive; null = the default path",
    "Data.train_dir": "folder: training images, one subfolder per class",
    "Data.val_dir": "folder: validation images, same class subfolders",
    "Data.val_split": "folder without val_dir: hold out this fraction of each class",
    "Data.split_seed": "which images Data.val_split holds out",
    "Data.train_list": "filelist: 'path label' lines of the training images",
    "Data.val_list": "filelist: 'path label' lines of the validation images",
    "Data.class_id_map_file": "filelist: 'id name' lines naming the classes",
    "Data.skip_bad_images": "leave unreadable images out (logged) instead of stopping",
    "Data.transform": "preprocessing/augmentation pipeline: conv2former_cifar (000), convit (002), dilateformer "
                      "(004) or basic (resize + normalise)",
    "Data.batch_size": "training images per step (per device)",
    "Data.eval_batch_size": "images per step when evaluating",
    "Data.num_workers": "DataLoader worker processes; 0 = load in the main process",
    "Data.drop_last": "drop the last partial training batch",
    "Data.limit": "use only the first N images of each split (smoke runs); null = all",
    "Data.mixup_alpha": "batch MixUp strength; 0 = off",
    "Data.cutmix_alpha": "batch CutMix strength; 0 = off",
    "Data.mix_prob": "probability of mixing a batch",
    "Data.switch_prob": "probability of CutMix instead of MixUp when both are on",
    "Data.train_ops": "training ops [{OpName: {args}}] (PaddleClas transform_ops, docs/data.md); null = the preset's",
    "Data.eval_ops": "eval ops, same form; also what export/infer/explain apply; null = the preset's",
    "Data.image_backend": "image type the ops receive: cv2 (RGB uint8 array) or pil; null = the preset's",
    "Data.repeated_aug": "DeiT's repeated augmentation: copies of each image per epoch (1 = off)",
    "Data.cutmix_minmax": "CutMix box sides as [min, max] fractions of the image; null = from lambda",
    "Data.mix_mode": "MixUp/CutMix lambda per batch, per mirrored pair or per image (timm's mode)",
    "Eval.grid_images": "first N test images drawn in predictions.png; 0 = none",
    "Eval.model": "evaluate an exported model (prefix, file or folder) through its verified backend (Eval.backend)",
    "Eval.use_predictor": "export Global.pretrained_model to a temp folder and evaluate that",
    "Eval.backend": "inference backend of Eval.model/use_predictor; auto = the fastest one export verified",
    "Eval.output": "folder of eval.json, confusion_matrix.png and predictions.png; null = the run folder. An "
                   "evaluation of other weights already there is kept: the new files are named after the weights "
                   "(eval_final_model.json, ...)",
    "Export.output": "folder of the exported model; null = <run folder>/inference",
    "Export.onnx": "also write <prefix>.onnx (where paddle2onnx is installed)",
    "Export.check_images": "first N test images every backend must classify as dygraph does (>= 99.5% top-1 "
                           "agreement); 0 = off",
    "Infer.model": "exported model: prefix, one of its files or its folder; null = <run folder>/inference",
    "Infer.images": "image files and/or folders to classify",
    "Infer.topk": "classes printed per image",
    "Infer.batch_size": "images per predictor call",
    "Infer.grid_images": "first N images drawn in infer_predictions.png; 0 = none",
    "Infer.output": "folder of infer.json and the grid; null = the run folder",
    "Infer.backend": "inference backend; auto = the fastest one export verified",
    "Explain.indices": "test-set images to explain (when Explain.images is null)",
    "Explain.images": "image files and/or folders to explain instead of test images",
    "Explain.top_k": "most probable classes explained (plus the true class of test images)",
    "Explain.num_samples": "perturbed images per explanation",
    "Explain.batch_size": "perturbed images per forward pass",
    "Explain.model": "run LIME through this exported model (its verified backend: Explain.backend)",
    "Explain.use_predictor": "export Global.pretrained_model to a temp folder and run LIME through it",
    "Explain.output": "folder of the LIME figures; null = <run folder>/explain",
    "Explain.backend": "inference backend of Explain.model/use_predictor; auto = the fastest one export verified",
    "Explain.kernel_size": "quickshift's kernel_size (null = interpretdl's 5); smaller = more superpixels",
    "Explain.max_dist": "quickshift's max_dist (null = interpretdl's 10); smaller = more superpixels",
    "Explain.ratio": "quickshift's colour/space balance ratio (null = interpretdl's 1.0)",
}

ENVIRONMENT = [
    ("PPVIT_DEBUG=1", "show the traceback of a user error instead of the one-line message"),
    ("OMP_NUM_THREADS", "CPU threads; unset, the tools use every usable core"),
]

# verb -> (description, [(section, keys or None for all)], example)
_RUN = [("Global", ["device", "output_dir", "run_name", "pretrained_model"]), ("Arch", None)]
VERB_HELP = {
    "train": ("Train a model from a YAML config (PaddleClas's -c/-o). Writes best_model, final_model, latest.* "
              "(resumable), train.log, history.json and learning curves to Global.output_dir/<run name>/.",
              [("Global", None), ("Arch", None), ("Loss", None), ("Optimizer", None), ("Data", None)],
              "ppvit train -c configs/quickstart.yaml -o Global.epochs=3 -o Data.batch_size=32"),
    "eval": ("Evaluate weights on the test split: loss, top-1/top-5, per-class accuracy; writes eval.json, "
             "confusion_matrix.png and predictions.png to the run folder (Eval.output), or eval_<weights>.json, "
             "... beside them when they hold an evaluation of other weights.",
             _RUN + [("Data", ["dataset", "data_file", "val_dir", "val_list", "transform", "eval_batch_size",
                               "limit"]), ("Eval", None)],
             "ppvit eval -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"),
    "export": ("Export weights for Paddle Inference (+ ONNX), with their preprocessing and class names in "
               "<prefix>.meta.json, and check the exported model against the dygraph one.",
               _RUN + [("Data", ["dataset", "data_file", "val_dir", "val_list", "transform"]), ("Export", None)],
               "ppvit export -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"),
    "infer": ("Classify image files or folders with an exported model: top-k per image printed, infer.json and "
              "infer_predictions.png written.",
              [("Global", ["device", "output_dir", "run_name"]), ("Infer", None)],
              "ppvit infer -c configs/quickstart.yaml -o Infer.images=my_images -o Infer.topk=3"),
    "explain": ("LIME explanations (image | superpixels | explanation per class) of test images or image files, "
                "through the dygraph model or an exported model.",
                [("Global", ["device", "seed", "output_dir", "run_name", "pretrained_model"]), ("Arch", None),
                 ("Data", ["dataset", "data_file", "transform"]), ("Explain", None)],
                "ppvit explain -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams "
                "-o 'Explain.indices=[0,3]'"),
}


def _default_text(spec):
    from ..engine.config import REQUIRED

    if spec.default is REQUIRED:
        return "required"
    return "default " + yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("\n...")


def describe_keys(section, keys=None, width=100):
    """One entry per key of ``section`` (all when ``keys`` is None): name, type, default, choices, meaning."""
    from ..engine.config import SCHEMA

    lines = []
    for key, spec in SCHEMA[section].items():
        if keys is not None and key not in keys:
            continue
        name = f"{section}.{key}"
        facts = [spec.type_names(), _default_text(spec)]
        if spec.choices:
            facts.append("one of " + "|".join(spec.choices))
        text = f"{name} ({', '.join(facts)}): {KEY_DOCS.get(name, '')}"
        lines.append(textwrap.fill(text, width, initial_indent="  ", subsequent_indent="      "))
    if section == "Arch" and keys is None:
        lines.append("  Arch.<other>: passed to the model builder (e.g. drop_path_rate, in_chans)")
    return lines


CONVERT_EXAMPLE = ("ppvit convert --model convit_tiny --src convit_tiny.pth "
                   "--dst pretrained/convit_tiny.safetensors")


def verb_description(verb, width=100):
    return textwrap.fill(VERB_HELP[verb][0], width)


def verb_epilog(verb):
    """The text after the usage of ``ppvit <verb> -h``: keys read, environment, example."""
    if verb == "convert":
        return "example:\n  " + CONVERT_EXAMPLE
    _, sections, example = VERB_HELP[verb]
    lines = ["config keys it reads (set in the YAML or with -o Section.key=value):"]
    for section, keys in sections:
        lines += describe_keys(section, keys)
    lines += ["", "environment:"] + [f"  {name}: {text}" for name, text in ENVIRONMENT]
    lines += ["", "example:", f"  {example}"]
    return "\n".join(lines)
