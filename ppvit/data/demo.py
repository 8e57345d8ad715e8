"""An offline photo dataset for the "train on your own images" demo: random crops of four photos that ship
with scikit-image (``skimage.data``: astronaut, chelsea the cat, coffee, rocket; bundled, no download),
written as image files the way users keep their own data.

    python -m ppvit.data.demo data/photos

writes ``data/photos/``:

    train/<class>/<class>_000.png ...   a class-per-subfolder tree (Data.dataset: folder)
    val/<class>/...
    train_list.txt, val_list.txt        PaddleClas ``path label`` lists of the same files (Data.dataset: filelist)
    labels.txt                          ``id name`` lines (Data.class_id_map_file)

``configs/folder_demo.yaml`` and ``configs/filelist_demo.yaml`` train on it.
"""
import argparse
import json
import os
import sys

import numpy as np

from .errors import DataError

PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}  # class: skimage.data
MARKER = "ppvit_demo.json"


def _write_png(path, rgb):
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # RGB -> BGR
    if not ok:  # pragma: no cover - PNG encoding of a uint8 array does not fail
        raise RuntimeError(f"cannot encode {path}")
    buf.tofile(path)


def _crops(photo, n, size, rng):
    """``n`` random square crops (35-80% of the shorter side, random position and mirror) at ``size``."""
    import cv2

    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        side = int(rng.uniform(0.35, 0.8) * min(h, w))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA))
    return out


def write_photo_demo(root, train_per_class=24, val_per_class=8, size=64, seed=0):
    """Write the demo dataset under ``root`` (see the module docstring); returns a dict of its paths.

    A folder that already holds other files is refused (DataError); an earlier demo there is rewritten.
    """
    import skimage.data

    root = os.fspath(root)
    if os.path.isdir(root) and os.listdir(root) and not os.path.isfile(os.path.join(root, MARKER)):
        raise DataError(f"{root} already holds files that are not a ppvit demo; choose an empty or new folder")
    rng = np.random.default_rng(seed)
    classes = sorted(PHOTOS)
    lists = {"train": [], "val": []}
    for label, name in enumerate(classes):
        photo = getattr(skimage.data, PHOTOS[name])()
        images = _crops(photo, train_per_class + val_per_class, size, rng)
        for split, chunk in (("train", images[:train_per_class]), ("val", images[train_per_class:])):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i, img in enumerate(chunk):
                rel = f"{split}/{name}/{name}_{i:03d}.png"
                _write_png(os.path.join(root, rel), img)
                lists[split].append(f"{rel} {label}")
    paths = {"root": root, "train_dir": os.path.join(root, "train"), "val_dir": os.path.join(root, "val"),
             "train_list": os.path.join(root, "train_list.txt"), "val_list": os.path.join(root, "val_list.txt"),
             "class_id_map_file": os.path.join(root, "labels.txt")}
    for split in ("train", "val"):
        with open(paths[f"{split}_list"], "w", encoding="utf-8") as f:
            f.write("\n".join(lists[split]) + "\n")
    with open(paths["class_id_map_file"], "w", encoding="utf-8") as f:
        f.write("".join(f"{i} {name}\n" for i, name in enumerate(classes)))
    with open(os.path.join(root, MARKER), "w", encoding="utf-8") as f:
        json.dump({"classes": classes, "train_per_class": train_per_class, "val_per_class": val_per_class,
                   "size": size, "seed": seed, "source": {c: f"skimage.data.{PHOTOS[c]}" for c in classes}}, f)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description="Write the offline photo demo dataset (crops of scikit-image's "
                                            "sample photos) as a class folder tree plus PaddleClas file lists.")
    p.add_argument("root", nargs="?", default="data/photos", help="output folder (default data/photos)")
    p.add_argument("--train-per-class", type=int, default=24)
    p.add_argument("--val-per-class", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = write_photo_demo(args.root, args.train_per_class, args.val_per_class, args.size, args.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(PHOTOS) * (args.train_per_class + args.val_per_class)
    print(f"wrote {n} images of {len(PHOTOS)} classes ({', '.join(sorted(PHOTOS))}) to {paths['root']}: "
          f"train/ and val/ class folders, train_list.txt, val_list.txt, labels.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
