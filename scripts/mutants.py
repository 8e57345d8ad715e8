"""Switch features off one at a time and check that a test notices.

    python scripts/mutants.py            # every mutant
    python scripts/mutants.py --list     # their names
    python scripts/mutants.py ema-noop lime-unweighted

Each mutant replaces one snippet of the package (it must occur exactly once) in a temporary copy of the
repository and runs only the tests that cover it. A mutant is *killed* when those tests fail, *survived* when
they pass (a feature nothing checks), *stale* when its snippet is no longer in the code (update the list).
Exit status 0 only when every mutant is killed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
GUARDS = "tests/test_feature_guards.py"

# name: (file, snippet, replacement, tests)
MUTANTS = {
    "ema-noop": (
        "ppvit/engine/ema.py",
        "        own = dict(self.module.named_parameters())\n",
        "        return\n        own = dict(self.module.named_parameters())\n",
        [f"{GUARDS}::test_ema_is_the_exponential_average_of_the_weights"]),
    "no-grad-clip": (
        "ppvit/engine/optim.py",
        'clip = paddle.nn.ClipGradByGlobalNorm(opt_cfg["grad_clip"]) if opt_cfg["grad_clip"] else None',
        "clip = None",
        [f"{GUARDS}::test_gradient_clipping_bounds_the_global_norm"]),
    "no-mixing": (
        "ppvit/engine/trainer.py",
        "images, targets = e.mixer(images, labels)",
        "pass",
        [f"{GUARDS}::test_mixed_batches_reach_the_model_and_the_loss"]),
    "lime-unweighted": (
        "ppvit/explain/lime.py",
        "model.fit(samples, target, sample_weight=kernel_weights)",
        "model.fit(samples, target)",
        [f"{GUARDS}::test_lime_coefficients_are_the_weighted_least_squares_fit"]),
    "fp32-limit-off": (
        "ppvit/deploy/export.py",
        "elif rel > FP32_TOLERANCE:",
        "elif False:",
        [f"{GUARDS}::test_compare_fp32_limit"]),
    "bf16-scale-limit-off": (
        "ppvit/deploy/export.py",
        "if rel > BF16_TOLERANCE:",
        "if False:",
        [f"{GUARDS}::test_compare_bf16_limits"]),
    "bf16-prob-limit-off": (
        "ppvit/deploy/export.py",
        "elif prob > BF16_PROB_TOLERANCE:",
        "elif False:",
        [f"{GUARDS}::test_compare_bf16_limits"]),
    "check-images-top1-off": (
        "ppvit/deploy/export.py",
        "if rec[\"reason\"] is None and check_out is not None and top1 < MIN_TOP1_AGREEMENT:",
        "if False:",
        [f"{GUARDS}::test_compare_rejects_a_flipped_prediction_on_check_images"]),
    "auto-unchecked": (
        "ppvit/deploy/predictor.py",
        "    def _changed_files(self, name):\n",
        "    def _changed_files(self, name):\n        return None\n",
        [f"{GUARDS}::test_auto_serves_the_other_backend_when_the_chosen_ones_file_is_tampered"]),
    "best-every-epoch": (
        "ppvit/engine/trainer.py",
        '        if state.best["epoch"] == state.epoch:\n            ckpt.save_weights(eval_model',
        '        if True:\n            ckpt.save_weights(eval_model',
        [f"{GUARDS}::test_best_model_keeps_the_best_epoch_when_validation_drops_later"]),
    "bn-from-rank0": (
        "ppvit/engine/distributed.py",
        "            dist.all_reduce(value)\n            paddle.assign(value / n, value)",
        "            dist.broadcast(value, src=0)",
        [f"{GUARDS}::test_batchnorm_statistics_become_the_mean_of_the_ranks"]),
    "mixer-rng-not-restored": (
        "ppvit/engine/state.py",
        "            mixer.rng.set_state(self.mixer_rng)",
        "            pass",
        [f"{GUARDS}::test_resume_with_mixup_cutmix_and_ema_is_bit_exact"]),
    "ema-not-resumed": (
        "ppvit/engine/checkpoint.py",
        '        ema.set_state_dict(state["ema"])',
        "        pass",
        [f"{GUARDS}::test_resume_with_mixup_cutmix_and_ema_is_bit_exact"]),
    "scaler-not-saved": (
        "ppvit/engine/checkpoint.py",
        '"scaler": scaler.state_dict() if scaler is not None else None,',
        '"scaler": None,',
        [f"{GUARDS}::test_amp_grad_scaler_state_round_trips_through_the_checkpoint"]),
    "solarize-off": (
        "ppvit/data/auto_augment.py",
        "    return ImageOps.solarize(img, thresh)",
        "    return img",
        ["tests/test_augment.py::test_every_op_equals_timm"]),
    "bad-image-swallowed": (
        "ppvit/data/loader.py",
        '                problems.append({"kind": "skipped" if self.skip else "user", "message": str(e), "path": e.path})',
        '                problems.append({"kind": "skipped", "message": str(e), "path": e.path})',
        ["tests/test_data_errors.py::test_a_damaged_training_image_stops_with_one_line"]),
    "gradcam-wrong-target": (
        "ppvit/explain/gradcam.py",
        "                score = (logits * onehot).sum()",
        "                score = logits.max(axis=-1).sum()",
        ["tests/test_gradcam.py::test_gradcam_per_family_shape_range_and_class"]),
}

COPIED = ("ppvit", "tests", "tools", "configs", "pyproject.toml")


def copy_repo(dst):
    for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        else:
            shutil.copy2(src, os.path.join(dst, name))


def apply(dst, file, snippet, replacement):
    path = os.path.join(dst, file)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.count(snippet) != 1:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(snippet, replacement))
    return True


def run_mutant(name, timeout):
    file, snippet, replacement, tests = MUTANTS[name]
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as dst:
        copy_repo(dst)
        if not apply(dst, file, snippet, replacement):
            return "stale", 0.0, f"snippet not found exactly once in {file}"
        env = dict(os.environ, PYTHONPATH=dst, PYTHONDONTWRITEBYTECODE="1")
        t = time.time()
        try:
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                 cwd=dst, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed", time.time() - t, "timed out"
        took = time.time() - t
        if res.returncode == 0:
            return "survived", took, "the tests passed without the feature"
        if res.returncode == 1:
            return "killed", took, ""
        return "error", took, (res.stdout + res.stderr).strip().splitlines()[-1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant")
    args = parser.parse_args(argv)
    if args.list:
        for name, (file, *_rest) in MUTANTS.items():
            print(f"{name:28s} {file}")
        return 0
    unknown = [n for n in args.names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants {unknown}; see --list")
    names = args.names or list(MUTANTS)
    # the same tests must pass on the unchanged code, or a "killed" would mean nothing
    tests = sorted({test for name in names for test in MUTANTS[name][3]})
    with tempfile.TemporaryDirectory(prefix="mutant-none-") as dst:
        copy_repo(dst)
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=dst,
                             env=dict(os.environ, PYTHONPATH=dst, PYTHONDONTWRITEBYTECODE="1"),
                             capture_output=True, text=True, timeout=args.timeout * 2)
    if res.returncode != 0:
        print("the covering tests fail on the unchanged code:\n" + (res.stdout + res.stderr)[-3000:])
        return 2
    print(f"baseline: the {len(tests)} covering tests pass on the unchanged code", flush=True)
    results = {}
    for name in names:
        status, took, note = run_mutant(name, args.timeout)
        results[name] = status
        print(f"{status:9s} {name:28s} {took:6.1f}s {note or ''}", flush=True)
    killed = sum(s == "killed" for s in results.values())
    print(f"{killed}/{len(results)} killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
