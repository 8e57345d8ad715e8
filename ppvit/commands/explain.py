"""``ppvit explain`` (tools/explain.py): LIME figures for test images (Explain.indices) or image files
(Explain.images), through the dygraph model or an exported model (its verified backend)."""
import os
import tempfile
import warnings

import numpy as np

from ..engine.builder import build_device
from ..engine.config import ConfigError, run_dir
from ..engine.logger import get_logger
from ..io import write_json
from ..io.provenance import source_metadata, weights_record
from .common import (_as_list, _name, _unique, class_names, image_files, input_size, lime_mean_std, load_model,
                     open_predictor, predictor_of, preprocess_of, rgb_file)


def _explain_items(cfg, size, files=None, preprocess=None):
    """[(file stem, RGB uint8 image at the model's size, true label or None, title)]: of ``files`` (Explain.images,
    listed by ``image_files``; made by the ``preprocess`` record's eval ops when it holds them), else of the test
    images Explain.indices names."""
    ex = cfg["Explain"]
    if files:
        from ..io.images import ImageReadError

        items = []
        for path in files:
            stem = os.path.splitext(os.path.basename(path))[0]
            try:
                image = rgb_file(path, (size, size), preprocess)
            except ImageReadError as e:  # a file that is not an image
                raise ConfigError(f"Explain.images: {e}") from None
            items.append((f"lime_{stem}", image, None, os.path.basename(path)))
        return items

    from ..data import build_dataset, denormalize

    indices = _as_list(ex["indices"], "Explain.indices")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ConfigError(f"Explain.indices must be test-image indices (ints), got {ex['indices']!r}")
    dataset = build_dataset(cfg["Data"], "test")
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ConfigError(f"Explain.indices {bad} out of range: the test split has {len(dataset)} images")
    items = []
    for i in indices:
        chw, label = dataset[i]
        image = np.rint(denormalize(chw, cfg["Data"]) * 255.0).astype(np.uint8)
        items.append((f"lime_test{i}", image, int(np.ravel(label)[0]), f"test image {i}"))
    return items


def quickshift_kwargs(ex):
    """interpretdl's quickshift arguments with ``Explain.kernel_size``/``max_dist``/``ratio`` where set."""
    from ..explain.lime import QUICKSHIFT_INTERPRETDL

    kwargs = dict(QUICKSHIFT_INTERPRETDL)
    kwargs.update({k: ex[k] for k in ("kernel_size", "max_dist", "ratio") if ex.get(k) is not None})
    return kwargs


def run(cfg):
    """``ppvit explain``: one LIME figure (image | superpixels | explanation per class) per image.

    Explains the ``Explain.top_k`` most probable classes and, for test images, the true class (what notebook
    004 explained). Every image gets a fresh explainer seeded with ``Global.seed``, so a figure does not
    depend on which other images were asked for.
    """
    from ..explain import LimeImageExplainer, paddle_predict_fn, predictor_predict_fn
    from ..explain.lime import FewSuperpixelsWarning

    ex, g = cfg["Explain"], cfg["Global"]
    log = get_logger()
    names = class_names(cfg)
    # a wrong path stops before any model is loaded
    files = image_files(ex["images"], "Explain.images") if ex["images"] else None
    with tempfile.TemporaryDirectory(prefix="ppvit-explain-") as tmp:
        if ex["model"]:  # an exported model: its own preprocessing and labels
            build_device(g["device"])
            predictor = open_predictor(ex["model"], g["device"], ex["batch_size"], "Explain.model", ex["backend"],
                                       cfg=cfg)
            if not predictor.meta:
                raise ConfigError(f"Explain.model: {predictor.prefix} has no .meta.json (preprocessing unknown)")
            size = predictor.input_shape[1]
            names = predictor.labels or names
            preprocess = predictor.meta["preprocess"]
            predict_fn = predictor_predict_fn(predictor, *lime_mean_std(preprocess))
            how = f"{predictor.backend_label} ({predictor.prefix})"
            source, exported = predictor.meta.get("source_weights"), predictor.prefix
        else:
            model, size = load_model(cfg), input_size(cfg)
            preprocess = preprocess_of(cfg)
            mean, std = lime_mean_std(preprocess)
            source, exported = weights_record(g["pretrained_model"]), None
            if ex["use_predictor"]:  # thousands of forward passes: worth the export
                predictor = predictor_of(model, tmp, cfg, g["device"], ex["batch_size"], ex["backend"],
                                         "Explain.use_predictor")
                predict_fn = predictor_predict_fn(predictor, mean, std)
                how = f"{predictor.backend_label} (exported on the fly)"
            else:
                predict_fn = paddle_predict_fn(model, mean, std)
                how = "Paddle dygraph"

        items = _explain_items(cfg, size, files, preprocess)
        out = ex["output"] or os.path.join(run_dir(cfg), "explain")
        log.info(f"LIME on {len(items)} image(s), {ex['num_samples']} samples each, through {how}")
        written = []
        for n, (stem, image, label, where) in enumerate(items, 1):
            probs = predict_fn(image[None])[0]
            if ex["top_k"] > len(probs):
                raise ConfigError(f"Explain.top_k={ex['top_k']} exceeds the model's {len(probs)} classes")
            classes = [int(c) for c in np.argsort(-probs, kind="stable")[:ex["top_k"]]]
            if label is not None and label not in classes:
                classes.append(label)
            explainer = LimeImageExplainer(predict_fn, random_seed=g["seed"], progress=True,
                                           quickshift_kwargs=quickshift_kwargs(ex))
            with warnings.catch_warnings(record=True) as caught:  # LIME's advice as a log line, not a warning dump
                warnings.simplefilter("always", FewSuperpixelsWarning)
                explainer.interpret(image, interpret_class=classes, num_samples=ex["num_samples"],
                                    batch_size=ex["batch_size"], visual=False)
            for w in caught:
                if issubclass(w.category, FewSuperpixelsWarning):
                    log.warning(f"{where}: {w.message}")
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            pred = classes[0]
            title = f"{where}: predicted {_name(names, pred)} ({probs[pred]:.2f})"
            if label is not None:
                title += f", true {_name(names, label)}" + ("" if label == pred else " (wrong)")
            path = _unique(os.path.join(out, stem + ".png"), written)
            explainer.save_figure(path, class_names=names, title=title, metadata=source_metadata(source, exported))
            written.append(path)
            log.info(f"[{n}/{len(items)}] {title} -> {path}")
        index = write_json(os.path.join(out, "explain.json"),  # which weights the figures explain
                           {"source_weights": source, "model": exported, "forward": how,
                            "num_samples": ex["num_samples"], "seed": g["seed"],
                            "figures": [os.path.relpath(p, out) for p in written]})
        log.info(f"explanations: {index}")
    return written
