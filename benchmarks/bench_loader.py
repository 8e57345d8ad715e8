"""Images/s of one data-loader worker process on the ImageNet training pipeline, ppvit against timm, on the
same JPEG files, in one run.

    PYTHONPATH=. python benchmarks/bench_loader.py --timm-python /path/to/torch-venv/bin/python
    PYTHONPATH=. PPVIT_TIMM_PYTHON=/path/to/torch-venv/bin/python python benchmarks/bench_loader.py -n 48

The pipeline (DeiT's, as configs/imagenet/convit_tiny.yaml writes it): JPEG decode, RandomResizedCrop 224
(bicubic), horizontal flip, RandAugment ``rand-m9-mstd0.5-inc1``, ToTensor + Normalize, RandomErasing 0.25
(pixel). ppvit runs what a training worker runs: ``ImageFileDataset`` (OpenCV decode) with the config's train
ops; timm runs ``create_transform(224, is_training=True, ...)`` on ``PIL.Image.open(...).convert('RGB')``, as
timm's ``ImageFolder`` does (its Posterize given Pillow < 12's result for 0 bits, which Pillow >= 12 refuses),
in a process of its own (``--timm-python``/``PPVIT_TIMM_PYTHON``: a Python with
timm; without one only ppvit is timed). Both single-threaded (one worker = one process), each file once per
round, rounds alternating between the two, the median round reported. The JPEGs are written once (random
crops of scikit-image's photos at ImageNet-like sizes, quality 90) to ``--dir`` (default: a temp folder).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

TIMM_WORKER = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from PIL import Image, ImageOps
from timm.data import create_transform
_posterize = ImageOps.posterize
def _posterize_old(img, bits):  # Pillow >= 12 refuses 0 bits (timm asks for it at M 10): the older black image
    return img.point([0] * 256 * len(img.getbands())) if bits <= 0 else _posterize(img, bits)
ImageOps.posterize = _posterize_old
files, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
t = create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                     re_prob=0.25, re_mode="pixel", re_count=1)
for path in files[:4]:  # warm-up
    t(Image.open(path).convert("RGB"))
for _ in range(rounds):
    line = sys.stdin.readline()
    if not line:
        break
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as f:
            x = t(Image.open(f).convert("RGB"))
    print(json.dumps(time.perf_counter() - start), flush=True)
"""

TRAIN_OPS = [
    {"TimmRandomResizedCrop": {"interpolation": "bicubic"}},
    {"TimmHorizontalFlip": {"p": 0.5}},
    {"TimmAutoAugment": {"config_str": "rand-m9-mstd0.5-inc1"}},
    {"TimmNormalize": {}},
    {"TimmRandomErasing": {"probability": 0.25, "mode": "pixel", "max_count": 1}},
]


def write_jpegs(folder, n, seed=0):
    """``n`` JPEGs (quality 90) of 375x500 / 500x375 random crops of scikit-image's photos, in one class
    folder."""
    import cv2
    import numpy as np
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    rng = np.random.RandomState(seed)
    cls = os.path.join(folder, "train", "photos")
    os.makedirs(cls, exist_ok=True)
    files = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        s = rng.uniform(0.5, 1.0)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
        size = (500, 375) if i % 2 else (375, 500)  # (w, h)
        img = cv2.resize(np.ascontiguousarray(photo[y:y + ch, x:x + cw]), size, interpolation=cv2.INTER_AREA)
        path = os.path.join(cls, f"img_{i:04d}.jpg")
        cv2.imwrite(path, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        files.append(path)
    return files


def ppvit_dataset(folder):
    import cv2

    cv2.setNumThreads(1)
    from ppvit.data.folder import ImageFileDataset, split_samples
    from ppvit.data.transforms import build_transform

    root = os.path.join(folder, "train")
    samples, names, _ = split_samples({"dataset": "folder", "train_dir": root, "val_dir": root}, "train")
    transform = build_transform({"transform": "basic", "image_backend": "pil", "image_size": 224,
                                 "train_ops": TRAIN_OPS, "arch": "convit_tiny"}, "train")
    return ImageFileDataset(samples, names, transform, backend="pil")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--images", type=int, default=32, help="JPEG files (default 32)")
    p.add_argument("-r", "--rounds", type=int, default=5, help="timed passes over the files (default 5)")
    p.add_argument("--dir", default=None, help="folder for the JPEGs (default: a temp folder)")
    p.add_argument("--timm-python", default=os.environ.get("PPVIT_TIMM_PYTHON"),
                   help="a Python with timm installed (default: $PPVIT_TIMM_PYTHON); none: ppvit only")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="ppvit-bench-loader-") as tmp:
        folder = args.dir or tmp
        files = write_jpegs(folder, args.images)
        dataset = ppvit_dataset(folder)
        files = [path for path, _ in dataset.samples]
        for i in range(4):  # warm-up
            dataset[i]
        worker = None
        if args.timm_python:
            worker = subprocess.Popen([args.timm_python, "-c", TIMM_WORKER, json.dumps(files), str(args.rounds)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      env=dict(os.environ, OMP_NUM_THREADS="1"))
        ours, theirs = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            ours.append(time.perf_counter() - start)
            if worker is not None:
                worker.stdin.write("go\n")
                worker.stdin.flush()
                line = worker.stdout.readline()
                if not line:
                    sys.exit(f"the timm worker ({args.timm_python}) stopped: is timm installed there?")
                theirs.append(json.loads(line))
        if worker is not None:
            worker.stdin.close()
            worker.wait()

    def rate(times):
        return len(files) / sorted(times)[len(times) // 2]

    print(f"ImageNet train pipeline (decode, RandomResizedCrop 224 bicubic, flip, rand-m9-mstd0.5-inc1, normalise, "
          f"erasing 0.25), {len(files)} JPEGs, median of {args.rounds} rounds, one process, one thread")
    print(f"ppvit: {rate(ours):7.1f} images/s per worker process")
    if theirs:
        print(f"timm:  {rate(theirs):7.1f} images/s per worker process")
        print(f"ppvit/timm: {rate(ours) / rate(theirs):.2f}x")


if __name__ == "__main__":
    main()
