"""Each feature states its property here, so that switching the feature off fails a test.

``scripts/mutants.py`` switches each of them off in a copy of the package and runs these tests (docs/testing.md).
Tolerances are written here, never imported from ppvit.
"""
import logging
import os

import numpy as np
import paddle
import pytest

from ppvit.engine.config import load_config
from ppvit.engine.engine import Engine
from tests.runs import TINY


# ---------------------------------------------------------------------------------------------- EMA
def test_ema_is_the_exponential_average_of_the_weights():
    """After known updates, EMA weights equal ``d*ema + (1-d)*w`` applied step by step."""
    from ppvit.engine.ema import ModelEMA

    paddle.seed(1)
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.Linear(3, 2))
    decay = 0.75
    ema = ModelEMA(model, decay)
    expected = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        for p in model.parameters():
            p.set_value(rng.standard_normal(p.shape).astype("float32"))
        ema.update(model)
        current = {k: v.numpy() for k, v in model.state_dict().items()}
        expected = {k: decay * expected[k] + (1 - decay) * current[k] for k in expected}
    got = {k: v.numpy() for k, v in ema.state_dict().items()}
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------------------------- gradient clipping
def test_gradient_clipping_bounds_the_global_norm():
    """With ``Optimizer.grad_clip``, an SGD step (lr 1, no momentum/decay) moves the weights by at most the
    clip norm, on a step whose raw gradient norm is far above it."""
    from ppvit.engine.optim import build_optimizer, build_scheduler

    clip = 0.5
    cfg = {"name": "SGD", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": clip,
           "scheduler": "constant", "warmup_epochs": 0, "eta_min": 0.0}
    paddle.seed(2)
    model = paddle.nn.Linear(8, 4)
    opt = build_optimizer(cfg, model, build_scheduler(cfg, 1, 1))
    before = [p.numpy().copy() for p in model.parameters()]
    loss = (model(paddle.ones([2, 8])) * 100.0).sum()
    loss.backward()
    raw_norm = float(np.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters())))
    assert raw_norm > 10 * clip  # the step would exceed the clip
    opt.step()
    moved = float(np.sqrt(sum(((p.numpy() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    assert moved == pytest.approx(clip, rel=1e-4)


# ---------------------------------------------------------------------------------------------- MixUp / CutMix
def test_mixed_batches_reach_the_model_and_the_loss(tmp_path):
    """With MixUp/CutMix on, the model sees mixed images and the loss gets soft two-class targets."""
    cfg = load_config(None, [f"Global.output_dir={tmp_path}", "Global.epochs=1", "Data.limit=32",
                             "Data.mixup_alpha=0.8", "Data.cutmix_alpha=1.0"], base=TINY)
    engine = Engine(cfg)
    seen_inputs, seen_targets = [], []
    engine.model.register_forward_pre_hook(lambda layer, inputs: seen_inputs.append(inputs[0].numpy().copy()))
    loss_fn = engine.loss_fn

    def recording_loss(logits, targets):
        seen_targets.append(targets.numpy().copy())
        return loss_fn(logits, targets)

    engine.loss_fn = recording_loss
    engine.train()
    batch = engine.cfg["Data"]["batch_size"]
    seen_targets = [t for t in seen_targets if len(t) == batch]  # the training steps (not the memory estimate's)
    seen_inputs = [x for x in seen_inputs if len(x) == batch]
    assert len(seen_targets) == engine.steps_per_epoch
    for t in seen_targets:
        assert t.ndim == 2 and t.shape[1] == 10
        np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-5)
    # at least one batch mixed two classes in some rows (lambda ~ Beta, never exactly 0 or 1)
    assert any(((t > 1e-6).sum(1) == 2).any() for t in seen_targets)
    # the images the model trained on are not the loader's: the same epoch replayed unmixed differs
    sampler = engine.train_loader.batch_sampler
    sampler.set_epoch(0, 0)
    raw = [images.numpy() for images, _ in engine.train_loader]
    train_inputs = seen_inputs[:len(raw)]
    assert len(train_inputs) == len(raw)
    assert all(a.shape == b.shape for a, b in zip(train_inputs, raw))
    assert any(not np.allclose(a, b) for a, b in zip(train_inputs, raw))


# ---------------------------------------------------------------------------------------------- LIME's fit
def test_lime_coefficients_are_the_weighted_least_squares_fit():
    """LIME's coefficients equal a hand-written weighted least squares (kernel = sqrt(exp(-d^2 / w^2)), d the
    cosine distance to the all-ones mask) on a non-linear predict_fn, where the unweighted fit differs."""
    from ppvit.explain.lime import LimeImageExplainer

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    segments = (np.arange(24)[:, None] // 6 * 4 + np.arange(24)[None, :] // 6)  # 16 square superpixels

    def predict_fn(batch):  # a non-linear function: the product of two quadrants' brightness
        b = np.asarray(batch, np.float64) / 255.0
        p = b[:, :12, :12].mean(axis=(1, 2, 3)) * b[:, 12:, 12:].mean(axis=(1, 2, 3)) * 3.0
        p = np.clip(p, 0.0, 1.0)
        return np.stack([p, 1.0 - p], axis=1)

    width = 0.25
    explainer = LimeImageExplainer(predict_fn, random_seed=0, kernel_width=width, hide_color=0,
                                   segmentation_fn=lambda img: segments, progress=False)
    weights = explainer.interpret(image, interpret_class=0, num_samples=300, visual=False)
    res = explainer.lime_results
    masks = res["samples"].astype(np.float64)
    y = res["predictions"][:, 0].astype(np.float64)
    # the reference: written out, not sklearn
    cos = masks.sum(1) / (np.linalg.norm(masks, axis=1) * np.sqrt(masks.shape[1]) + 1e-300)
    d = 1.0 - cos
    kw = np.sqrt(np.exp(-d ** 2 / width ** 2))
    X = np.hstack([np.ones((len(masks), 1)), masks])
    sw = np.sqrt(kw)[:, None]
    beta = np.linalg.lstsq(X * sw, y * sw[:, 0], rcond=None)[0]
    got = dict(weights[0])
    np.testing.assert_allclose([got[i] for i in range(16)], beta[1:], rtol=0, atol=1e-6)
    assert res["intercepts"][0] == pytest.approx(beta[0], abs=1e-6)
    unweighted = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.abs(unweighted[1:] - beta[1:]).max() > 1e-4  # the weights matter for this predict_fn


# ---------------------------------------------------------------------------------------------- export's limits
FP32_LIMIT = 1e-4  # max|out - ref| / max(1, max|ref|)
BF16_LIMIT = 0.05
BF16_PROB_LIMIT = 0.02
TOP1_LIMIT = 0.995


def _logits(n=200, classes=10, seed=0, gap=4.0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n, classes)) * 0.3
    ref[np.arange(n), rng.integers(0, classes, n)] += gap  # a clear top-1 on every row
    return ref.astype(np.float32)


@pytest.mark.parametrize("rel,ok", [(FP32_LIMIT * 0.5, True), (FP32_LIMIT * 2, False)])
def test_compare_fp32_limit(rel, ok):
    from ppvit.deploy.export import compare

    ref = _logits()
    scale = max(1.0, float(np.abs(ref).max()))
    out = ref.copy()
    out[0, 0] += rel * scale
    assert compare("paddle", out, ref)["verified"] is ok
    assert compare("onnxruntime", out, ref)["verified"] is ok


def test_compare_bf16_limits():
    """The bf16 rejections: logits beyond 5% of their scale, probabilities moved by more than 0.02."""
    from ppvit.deploy.export import compare

    ref = _logits()
    scale = max(1.0, float(np.abs(ref).max()))
    small = ref + np.float32(0.01 * scale / 10)  # a uniform shift: probabilities unchanged
    assert compare("paddle_bf16", small, ref)["verified"]
    big = ref.copy()
    big[0, 0] += 2 * BF16_LIMIT * scale
    rec = compare("paddle_bf16", big, ref)
    assert not rec["verified"] and "scale" in rec["reason"]
    # probabilities: one row's top logit lowered by 0.2 (well inside the logit limit) moves its probability
    prob = ref.copy()
    row = 1
    top = int(ref[row].argmax())
    prob[row, top] -= 0.2
    rec = compare("paddle_bf16", prob, ref)
    assert rec["max_prob_diff"] > BF16_PROB_LIMIT and not rec["verified"] and "probabilit" in rec["reason"]


def test_compare_rejects_a_flipped_prediction_on_check_images():
    """Top-1 agreement on the check images below 99.5% is rejected; at 99.5% it passes."""
    from ppvit.deploy.export import compare

    ref = _logits(n=200)
    check_ref = _logits(n=200, seed=1)

    def flipped(k):
        out = check_ref.copy()
        for i in range(k):
            top = int(out[i].argmax())
            out[i, (top + 1) % out.shape[1]] = out[i, top] + 1.0
        return out

    assert compare("paddle", ref, ref, flipped(1), check_ref)["verified"]  # 199/200 = 99.5%
    rec = compare("paddle", ref, ref, flipped(2), check_ref)  # 198/200 = 99.0%
    assert not rec["verified"] and "top-1 agreement" in rec["reason"]
    assert rec["top1_agreement"] == pytest.approx(0.99)


def test_auto_serves_the_other_backend_when_the_chosen_ones_file_is_tampered(tmp_path, caplog):
    """Whichever backend export chose, corrupting its file makes ``auto`` serve the other verified one, with
    a warning naming the skipped backend."""
    from ppvit import create_model
    from ppvit.deploy import Predictor, export_model

    model = create_model("convmixer_256_8", num_classes=3, dim=8, depth=1, img_size=12)
    model.eval()
    prefix = str(tmp_path / "inference")
    info = export_model(model, prefix, 12, backends=["paddle", "onnxruntime"], bench_batch_size=4)
    verified = [n for n, r in info["backends"].items() if r["verified"]]
    assert set(verified) == {"paddle", "onnxruntime"}
    chosen = info["backend"]
    other = ({"paddle", "onnxruntime"} - {chosen}).pop()
    target = prefix + (".onnx" if chosen == "onnxruntime" else ".pdiparams")
    with open(target, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        data = f.read(4)
        f.seek(-8, os.SEEK_END)
        f.write(bytes(b ^ 0x55 for b in data))
    with caplog.at_level(logging.WARNING, logger="ppvit"):
        pred = Predictor(prefix, device="cpu")
    assert pred.backend_name == other
    assert any(f"backend {chosen} skipped" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- best_model
def test_best_model_keeps_the_best_epoch_when_validation_drops_later(tmp_path):
    """Validation accuracy scripted to peak at epoch 2 of 3: best_model holds epoch 2's weights exactly."""
    import ppvit.engine.trainer as trainer
    from ppvit.io import load_state

    scores = iter([0.5, 0.9, 0.3])
    snapshots = {}
    real_evaluate = trainer.evaluate

    def scripted(model, *args, **kwargs):
        out = real_evaluate(model, *args, **kwargs)
        out["top1"] = next(scores)
        snapshots[len(snapshots) + 1] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        return out

    trainer.evaluate = scripted
    try:
        engine = Engine(load_config(None, [f"Global.output_dir={tmp_path}", "Global.epochs=3", "Data.limit=32"],
                                    base=TINY))
        engine.train()
    finally:
        trainer.evaluate = real_evaluate
    run = tmp_path / "tiny"
    best = load_state(run / "best_model.pdparams")
    assert all(np.array_equal(best[k], snapshots[2][k]) for k in snapshots[2])
    assert any(not np.array_equal(best[k], snapshots[3][k]) for k in snapshots[3])
    assert engine.state.best == {"top1": 0.9, "epoch": 2}


# ---------------------------------------------------------------------------------------------- BatchNorm sync
def test_batchnorm_statistics_become_the_mean_of_the_ranks(tmp_path):
    """Two CPU processes (gloo): after ``sync_buffers`` both ranks hold the mean of their own statistics."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "log"), os.path.join(ROOT, "tests", "workers", "sync_bn_worker.py"), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1)]
    names = [k[len("before/"):] for k in ranks[0] if k.startswith("before/")]
    assert len(names) == 4  # two BatchNorms' mean and variance
    for n in names:
        assert not np.allclose(ranks[0][f"before/{n}"], ranks[1][f"before/{n}"])
        mean = (ranks[0][f"before/{n}"].astype(np.float64) + ranks[1][f"before/{n}"]) / 2
        for r in (0, 1):
            np.testing.assert_allclose(ranks[r][f"after/{n}"], mean, rtol=1e-6, err_msg=f"rank {r} {n}")


# ---------------------------------------------------------------------------------------------- resume
def test_resume_with_mixup_cutmix_and_ema_is_bit_exact(tmp_path):
    """MixUp + CutMix (switching) and EMA: 2 epochs straight equal 1 epoch + resume, bit for bit (raw weights in
    ``latest``, EMA weights in ``final_model``, and every step's loss)."""
    from tests.test_resume import TINY as RESUME_TINY

    extra = ["Data.mixup_alpha=0.8", "Data.cutmix_alpha=1.0", "Global.ema_decay=0.9", "Global.epochs=2"]

    def cfg(out, *more):
        return load_config(None, [f"Global.output_dir={out}", *extra, *more], base=RESUME_TINY)

    straight = Engine(cfg(tmp_path / "a"))
    assert straight.mixer is not None and straight.ema is not None
    history = straight.train()
    first = Engine(cfg(tmp_path / "b"))
    first.train(until_epoch=1)
    run_b = tmp_path / "b" / "tiny"
    resumed = Engine(cfg(tmp_path / "b", f"Global.checkpoints={run_b}"))
    resumed_history = resumed.train()
    run_a = tmp_path / "a" / "tiny"
    from ppvit.io import load_state

    for name in ("final_model.pdparams", "latest.pdparams"):
        a, b = load_state(run_a / name), load_state(run_b / name)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    assert resumed_history["steps"]["loss"] == history["steps"]["loss"]


def test_amp_grad_scaler_state_round_trips_through_the_checkpoint(tmp_path):
    """An AMP run's loss scale and counters are in ``latest.pdstate`` and come back on resume. AMP runs on GPUs
    only, so the scalers here are enabled by hand (Paddle disables a GradScaler on the CPU)."""
    from ppvit.engine import checkpoint as ckpt

    def enabled_scaler(scale, incr_count):
        s = paddle.amp.GradScaler(init_loss_scaling=scale)
        s._enable = True  # what the constructor sets when it is enabled (on a GPU)
        s._scale = paddle.to_tensor(np.array([scale], np.float32))
        s._incr_ratio, s._decr_ratio, s._incr_every_n_steps, s._decr_every_n_nan_or_inf = 2.0, 0.5, 1000, 2
        s._incr_count, s._decr_count, s._use_dynamic_loss_scaling = incr_count, 1, True
        return s

    engine = Engine(load_config(None, [f"Global.output_dir={tmp_path}", "Global.epochs=1"], base=TINY))
    saved = enabled_scaler(512.0, 37)
    os.makedirs(engine.run_dir, exist_ok=True)
    ckpt.save_latest(engine.run_dir, engine.model, engine.optimizer, engine.scheduler, engine.state, scaler=saved)
    state = ckpt.load_latest(engine.run_dir)
    fresh = enabled_scaler(65536.0, 0)
    ckpt.restore(state, engine.model, engine.optimizer, engine.scheduler, scaler=fresh)
    got, want = fresh.state_dict(), saved.state_dict()
    assert float(got["scale"][0]) == 512.0 and got["incr_count"] == 37
    assert {k: v for k, v in got.items() if k != "scale"} == {k: v for k, v in want.items() if k != "scale"}
