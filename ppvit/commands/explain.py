"""``ppvit explain`` (tools/explain.py): LIME and/or Grad-CAM figures (Explain.method) for test images
(Explain.indices) or image files (Explain.images), through the dygraph model or an exported model (its verified
backend), each with its faithfulness (deletion/insertion curves against a random ranking) in explain.json."""
import copy
import os
import tempfile
import warnings

import numpy as np

from ..engine.builder import build_device
from ..engine.config import ConfigError, run_dir
from ..engine.logger import get_logger
from ..engine.runfiles import run_folder
from ..io import write_json
from ..io.provenance import source_metadata, weights_record
from .common import (_as_list, _name, _unique, class_names, image_files, input_size, lime_mean_std, load_model,
                     open_predictor, predictor_of, preprocess_of, rgb_file)

EXPLAIN_FOLDER = run_folder("explain")  # Explain.output's default, in the run folder


def _explain_items(cfg, size, files=None, preprocess=None):
    """[(name stem, RGB uint8 image at the model's size, true label or None, title)]: of ``files`` (Explain.images,
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
            items.append((stem, image, None, os.path.basename(path)))
        return items

    from ..data import build_dataset, data_config, denormalize

    indices = _as_list(ex["indices"], "Explain.indices")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ConfigError(f"Explain.indices must be test-image indices (ints), got {ex['indices']!r}")
    dataset = build_dataset(data_config(cfg), "test", cfg["Arch"]["img_size"])
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ConfigError(f"Explain.indices {bad} out of range: the test split has {len(dataset)} images")
    items = []
    for i in indices:
        chw, label = dataset[i]
        image = np.rint(denormalize(chw, data_config(cfg)) * 255.0).astype(np.uint8)
        items.append((f"test{i}", image, int(np.ravel(label)[0]), f"test image {i}"))
    return items


def quickshift_kwargs(ex, size):
    """LIME's quickshift arguments for ``size`` x ``size`` images: None (scaled to each image by the explainer,
    ``ppvit.explain.lime.scaled_quickshift_kwargs``) unless ``Explain.kernel_size``/``max_dist``/``ratio`` are
    set, which then replace those of the scaled defaults."""
    from ..explain.lime import scaled_quickshift_kwargs

    given = {k: ex[k] for k in ("kernel_size", "max_dist", "ratio") if ex.get(k) is not None}
    return dict(scaled_quickshift_kwargs((size, size)), **given) if given else None


def model_for_export(cfg, predictor, key="Explain.model"):
    """The dygraph model of an exported model, for Grad-CAM (gradients need it): the architecture of ``cfg``
    with the weights the export was made from (its ``source_weights`` record), or ``Global.pretrained_model``
    when given, which must then be those same weights (sha256). Another architecture, input size or weights
    than the export's is a ``ConfigError``: the explanation must be of the model that is served."""
    meta = predictor.meta or {}
    record = meta.get("source_weights") or {}
    cfg = copy.deepcopy(cfg)
    if meta.get("model") and meta["model"] != cfg["Arch"]["name"]:
        raise ConfigError(f"{key}: {predictor.prefix} is a {meta['model']}, the config's Arch.name is "
                          f"{cfg['Arch']['name']}: give the config the model was trained with")
    given = cfg["Global"]["pretrained_model"]
    if given:
        mine = weights_record(given)
        if mine and record.get("sha256") and mine["sha256"] != record["sha256"]:
            raise ConfigError(f"{key}: {predictor.prefix} was exported from {record.get('path')}, not from "
                              f"Global.pretrained_model={given}; Grad-CAM must explain the weights that are "
                              "served: leave Global.pretrained_model unset, or export these weights")
    elif record.get("path") and os.path.isfile(record["path"]):
        cfg["Global"]["pretrained_model"] = record["path"]
    else:
        raise ConfigError(f"{key}: Grad-CAM needs the dygraph weights {predictor.prefix} was exported from "
                          f"({record.get('path') or 'not recorded in its .meta.json'}), which are not there: give "
                          "them with -o Global.pretrained_model=path/to/model.pdparams")
    model = load_model(cfg)
    size = predictor.input_shape[1]
    if size != input_size(cfg):
        raise ConfigError(f"{key}: {predictor.prefix} takes {size}x{size} images, the config's Arch.img_size is "
                          f"{input_size(cfg)}")
    return model


def explanation_record(where, method, figure, c, names, probs, label, faith):
    """One entry of explain.json's ``explanations``."""
    return {"image": where, "method": method, "figure": figure, "class_id": int(c), "class_name": _name(names, c),
            "probability": float(probs[c]), "true_class": label, "faithfulness": faith}


def gradcam_maps(cam, predict_fn, image, classes):
    """``{class: [H, W] Grad-CAM map}`` of an RGB uint8 image, normalised as ``predict_fn`` normalises."""
    x = predict_fn.prepare(image[None])
    maps = cam(np.repeat(x, len(classes), axis=0), class_ids=classes)
    return {c: maps[i] for i, c in enumerate(classes)}


def run(cfg):
    """``ppvit explain``: per image, a LIME figure (image | superpixels | explanation per class) and/or a
    Grad-CAM figure (image | map per class | faithfulness curves), as Explain.method asks.

    Explains the ``Explain.top_k`` most probable classes and, for test images, the true class (what notebook
    004 explained). Every image gets a fresh LIME explainer seeded with ``Global.seed``, so a figure does not
    depend on which other images were asked for. Each explanation's faithfulness
    (``ppvit.explain.faithfulness``: deletion and insertion AUCs against random rankings, through the same
    forward as LIME) goes to explain.json.
    """
    from ..explain import (GradCAM, LimeImageExplainer, faithfulness, lime_saliency, paddle_predict_fn,
                           predictor_predict_fn)
    from ..explain.lime import FewSuperpixelsWarning
    from ..explain.plots import faithfulness_text, save_gradcam_figure

    ex, g = cfg["Explain"], cfg["Global"]
    use_lime, use_cam = ex["method"] in ("lime", "both"), ex["method"] in ("gradcam", "both")
    log = get_logger()
    names = class_names(cfg)
    # a wrong path stops before any model is loaded
    files = image_files(ex["images"], "Explain.images") if ex["images"] else None
    with tempfile.TemporaryDirectory(prefix="ppvit-explain-") as tmp:
        model = None
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
            if use_cam:
                model = model_for_export(cfg, predictor)
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
        cam = GradCAM(model) if use_cam else None

        items = _explain_items(cfg, size, files, preprocess)
        out = ex["output"] or os.path.join(run_dir(cfg), EXPLAIN_FOLDER)
        what = " and ".join(w for w, on in ((f"LIME ({ex['num_samples']} samples each)", use_lime),
                                            (f"Grad-CAM (layer {cam.layer_name})" if cam else "", use_cam)) if on)
        log.info(f"{what} on {len(items)} image(s), through {how}")
        written, records = [], []
        meta = source_metadata(source, exported)
        for n, (stem, image, label, where) in enumerate(items, 1):
            probs = predict_fn(image[None])[0]
            if ex["top_k"] > len(probs):
                raise ConfigError(f"Explain.top_k={ex['top_k']} exceeds the model's {len(probs)} classes")
            classes = [int(c) for c in np.argsort(-probs, kind="stable")[:ex["top_k"]]]
            if label is not None and label not in classes:
                classes.append(label)
            pred = classes[0]
            title = f"{where}: predicted {_name(names, pred)} ({probs[pred]:.2f})"
            if label is not None:
                title += f", true {_name(names, label)}" + ("" if label == pred else " (wrong)")

            def faith(saliency, c):
                return faithfulness(predict_fn, image, saliency, c, seed=g["seed"], batch_size=ex["batch_size"])

            if use_lime:
                explainer = LimeImageExplainer(predict_fn, random_seed=g["seed"], progress=True,
                                               quickshift_kwargs=quickshift_kwargs(ex, size))
                with warnings.catch_warnings(record=True) as caught:  # LIME's advice as a log line
                    warnings.simplefilter("always", FewSuperpixelsWarning)
                    explainer.interpret(image, interpret_class=classes, num_samples=ex["num_samples"],
                                        batch_size=ex["batch_size"], visual=False)
                for w in caught:
                    if issubclass(w.category, FewSuperpixelsWarning):
                        log.warning(f"{where}: {w.message}")
                    else:
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                res = explainer.lime_results
                scores = {c: faith(lime_saliency(res["segmentation"], res["lime_weights"][c]), c) for c in classes}
                path = _unique(os.path.join(out, f"lime_{stem}.png"), written)
                explainer.save_figure(path, class_names=names, title=title, metadata=meta)
                written.append(path)
                records += [explanation_record(where, "lime", os.path.relpath(path, out), c, names, probs, label,
                                               scores[c]) for c in classes]
                log.info(f"[{n}/{len(items)}] LIME {title} -> {path}; {faithfulness_text(scores[pred])}")
            if use_cam:
                maps = gradcam_maps(cam, predict_fn, image, classes)
                scores = {c: faith(maps[c], c) for c in classes}
                path = _unique(os.path.join(out, f"gradcam_{stem}.png"), written)
                save_gradcam_figure(path, image, maps, {c: float(probs[c]) for c in classes}, names, title, scores,
                                    metadata=meta)
                written.append(path)
                records += [explanation_record(where, "gradcam", os.path.relpath(path, out), c, names, probs, label,
                                               scores[c]) for c in classes]
                log.info(f"[{n}/{len(items)}] Grad-CAM {title} -> {path}; {faithfulness_text(scores[pred])}")
        index = write_json(os.path.join(out, "explain.json"),  # which weights the figures explain, how faithfully
                           {"source_weights": source, "model": exported, "forward": how, "method": ex["method"],
                            "num_samples": ex["num_samples"] if use_lime else None,
                            "gradcam_layer": cam.layer_name if cam else None, "seed": g["seed"],
                            "figures": [os.path.relpath(p, out) for p in written], "explanations": records})
        log.info(f"explanations: {index}")
    return written
