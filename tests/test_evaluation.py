"""Evaluation users ask for: per-class precision/recall/F1 (against scikit-learn), the expected calibration error
(against a hand computation), temperature scaling (against a brute-force search), and the whole path: ``ppvit eval -o
Eval.calibrate=true`` -> eval.json and reliability.png -> the temperature recorded by export -> applied by infer."""
import json
import math
import os

import numpy as np
import paddle
import pytest

from ppvit.engine.evaluator import (calibration_bins, evaluate, expected_calibration_error, fit_temperature, nll,
                                    per_class_metrics, per_class_table)
from tests.runs import TINY


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_per_class_precision_recall_f1_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))
    pred[pred == 4] = 3  # class 4 is never predicted: precision 0 (sklearn's zero_division=0)
    y[y == 5] = 0  # class 5 has no samples: recall 0
    labels = list(range(6))
    confusion = confusion_matrix(y, pred, labels=labels)
    ours = per_class_metrics(confusion)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(ours["precision"], p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["recall"], r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["f1"], f, rtol=0, atol=1e-12)
    assert ours["support"] == s.tolist()
    macro = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    assert ours["macro_precision"] == pytest.approx(macro[0], abs=1e-12)
    assert ours["macro_recall"] == pytest.approx(macro[1], abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(macro[2], abs=1e-12)
    # the eval table shows them, one row per class and the macro means on the "all" row
    table = per_class_table(confusion, [f"c{i}" for i in labels]).splitlines()
    assert table[0].split() == ["class", "samples", "correct", "accuracy", "precision", "recall", "F1"]
    assert table[1].split()[-3:] == [f"{100 * p[0]:.2f}%", f"{100 * r[0]:.2f}%", f"{100 * f[0]:.2f}%"]
    assert table[-1].split()[-1] == f"{100 * macro[2]:.2f}%"


def test_ece_matches_a_hand_computation():
    # confidences 0.9 (right), 0.92 (wrong), 0.5 (right), 0.34 (wrong), 1.0 (right) in 15 bins of width 1/15:
    # 0.9 and 0.92 share bin (13/15, 14/15] = (0.867, 0.933]; 0.5 is in (7/15, 8/15]; 0.34 in (5/15, 6/15];
    # 1.0 in (14/15, 1]
    conf = [0.9, 0.92, 0.5, 0.34, 1.0]
    right = [True, False, True, False, True]
    probs, labels = [], []
    for c, ok_ in zip(conf, right):
        rest = (1 - c) / 2
        probs.append([c, rest, rest])
        labels.append(0 if ok_ else 1)
    hand = (2 / 5) * abs(0.5 - 0.91) + (1 / 5) * abs(1 - 0.5) + (1 / 5) * abs(0 - 0.34) + (1 / 5) * abs(1 - 1.0)
    bins = calibration_bins(np.array(probs), np.array(labels))
    assert expected_calibration_error(bins) == pytest.approx(hand, abs=1e-12)
    assert bins[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 2, 1]


def test_temperature_scaling_minimises_nll_and_keeps_top1():
    rng = np.random.default_rng(1)
    n, c = 400, 10
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += rng.normal(1.5, 1.0, n)  # right ~70% of the time
    logits *= 4.0  # over-confident
    t, at_bound = fit_temperature(logits, y)
    assert not at_bound and t > 1.5
    # the minimum of the NLL over T: a fine brute-force grid, and scipy's bounded scalar search
    grid = np.exp(np.linspace(np.log(0.1), np.log(20), 4001))
    best = grid[np.argmin([nll(logits, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    from scipy.optimize import minimize_scalar

    ref = minimize_scalar(lambda lt: nll(logits, y, math.exp(lt)), bounds=(-3, 3), method="bounded",
                          options={"xatol": 1e-9}).x
    assert t == pytest.approx(math.exp(ref), rel=1e-5)
    assert nll(logits, y, t) <= nll(logits, y, best) + 1e-12
    # calibration changes the ECE (here: lowers it) and never the predicted class
    raw, cal = _softmax(logits), _softmax(logits / t)
    assert (raw.argmax(1) == cal.argmax(1)).all()
    ece_raw = expected_calibration_error(calibration_bins(raw, y))
    ece_cal = expected_calibration_error(calibration_bins(cal, y))
    assert ece_cal < 0.5 * ece_raw
    # every sample right by a wide margin: the NLL falls all the way to T -> 0, which is said
    sure = np.eye(3)[[0, 1, 2, 0]] * 50.0
    assert fit_temperature(sure, np.array([0, 1, 2, 0])) == (0.01, True)


def test_evaluate_keeps_the_histogram_and_the_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (10, 4)).astype("float32")
    y = rng.integers(0, 4, 10)
    batches = [(paddle.to_tensor(logits[i:i + 4]), paddle.to_tensor(y[i:i + 4])) for i in range(0, 10, 4)]
    res = evaluate(lambda x: x, batches, paddle.nn.functional.cross_entropy, 4, keep_logits=True)
    np.testing.assert_array_equal(res["logits"], logits.astype(np.float64))
    np.testing.assert_array_equal(res["labels"], y)
    np.testing.assert_allclose(res["calibration_bins"], calibration_bins(_softmax(logits), y), atol=1e-12)
    assert res["top1"] == pytest.approx((logits.argmax(1) == y).mean())


def test_calibrate_export_infer(tmp_path):
    """``ppvit eval -o Eval.calibrate=true`` on a trained tiny run: per-class metrics and the ECE in eval.json (the
    per-class ones as scikit-learn computes them from its confusion matrix), a reliability diagram beside the
    confusion matrix, a temperature that changes the ECE but not top-1; export records it; infer applies it and keeps
    the raw scores. (In-process, as the CLI calls them: ppvit.commands.<verb>.run(cfg).)"""
    import copy

    import cv2
    from sklearn.metrics import precision_recall_fscore_support

    from ppvit.commands import evaluate as eval_cmd, export, infer
    from ppvit.deploy import Predictor, preprocess_image, read_image
    from ppvit.engine import Engine, load_config

    base = copy.deepcopy(TINY)
    base["Global"]["output_dir"] = str(tmp_path / "out")
    base["Data"]["data_file"] = str(tmp_path / "digits.tar.gz")
    base["Eval"] = {"calibrate": True, "grid_images": 0}
    base["Export"] = {"onnx": False, "check_images": 0}
    Engine(load_config(base=base)).train()
    run = tmp_path / "out" / "tiny"
    eval_cmd.run(load_config(base=base))
    ev = json.loads((run / "eval.json").read_text())
    confusion = np.array(ev["confusion"])
    y = np.repeat(np.arange(10), confusion.sum(1))
    pred = np.concatenate([np.repeat(np.arange(10), row) for row in confusion])
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=list(range(10)), zero_division=0)
    np.testing.assert_allclose(ev["per_class"]["precision"], p, atol=1e-12)
    np.testing.assert_allclose(ev["per_class"]["recall"], r, atol=1e-12)
    np.testing.assert_allclose(ev["per_class"]["f1"], f, atol=1e-12)
    cal = ev["calibration"]
    assert 0 <= ev["ece"] <= 1 and cal["temperature"] > 0 and not cal["at_bound"]
    assert cal["top1"] == ev["top1"] and cal["ece"] != ev["ece"] and cal["nll"] <= cal["nll_raw"]
    assert sum(ev["reliability"]["count"]) == ev["count"] == 64
    assert (run / "reliability.png").stat().st_size > 0 and (run / "confusion_matrix.png").stat().st_size > 0

    info = export.run(load_config(base=base))
    meta = json.loads((run / "inference" / "inference.meta.json").read_text())
    assert info["temperature"] == meta["temperature"] == cal["temperature"]

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    base["Infer"] = {"images": str(images), "topk": 3, "grid_images": 0}
    infer.run(load_config(base=base))
    out = json.loads((run / "infer.json").read_text())
    assert out["temperature"] == cal["temperature"]
    predictor = Predictor(str(run / "inference" / "inference"), batch_size=4)
    for res in out["results"]:
        logits = predictor(preprocess_image(read_image(res["path"]), meta["preprocess"])[None]).astype(np.float64)
        scaled, raw = _softmax(logits / cal["temperature"])[0], _softmax(logits)[0]
        assert [t["class_id"] for t in res["topk"]] == list(np.argsort(-raw)[:3])
        for t in res["topk"]:
            assert t["score"] == pytest.approx(scaled[t["class_id"]], abs=1e-5)
            assert t["raw_score"] == pytest.approx(raw[t["class_id"]], abs=1e-5)

    # Export.temperature wins over the fitted one; weights without a calibration get none
    from ppvit.commands.export import _temperature
    from ppvit.engine.logger import get_logger

    cfg = load_config(base=base)
    weights = str(run / "best_model.pdparams")
    assert _temperature(cfg, weights, get_logger()) == cal["temperature"]
    cfg["Export"]["temperature"] = 1.0
    assert _temperature(cfg, weights, get_logger()) == 1.0
    cfg["Export"]["temperature"] = None
    other = tmp_path / "other.pdparams"  # found by its sha256: any other content is other weights
    other.write_bytes(b"other weights")
    assert _temperature(cfg, str(other), get_logger()) is None
    # a degenerate fit (at the end of the searched range) is not recorded
    degenerate = dict(ev, source_weights={"path": str(other), "sha256": _sha256(other)},
                      calibration=dict(cal, temperature=0.01, at_bound=True))
    (run / "eval_other.json").write_text(json.dumps(degenerate))
    assert _temperature(cfg, str(other), get_logger()) is None


def _sha256(path):
    from tests.runs import sha256

    return sha256(path)


def test_export_without_calibration_records_none(tmp_path):
    from ppvit.deploy import export_model
    import ppvit

    model = ppvit.create_model("convmixer_256_8", num_classes=3, dim=8, depth=1, img_size=8)
    info = export_model(model, tmp_path / "m" / "inference", 8, onnx=False, backends=[])
    assert info["temperature"] is None
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        export_model(model, tmp_path / "n" / "inference", 8, {"temperature": 0.0}, onnx=False, backends=[])
    assert not os.path.exists(tmp_path / "n")  # refused before anything was written
