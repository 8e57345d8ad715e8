"""Your own images: a class-per-subfolder tree (``Data.dataset: folder``, timm's/torchvision's ``ImageFolder``)
or PaddleClas's ``path label`` lists (``Data.dataset: filelist``, ``ImageNetDataset`` with ``cls_label_path``).

    Data.dataset: folder     Data.train_dir: photos/train   Data.val_dir: photos/val
                             (or Data.val_split: 0.2 with Data.split_seed: holds out a fraction of train_dir)
    Data.dataset: filelist   Data.train_list: photos/train_list.txt   Data.val_list: photos/val_list.txt
                             Data.class_id_map_file: photos/labels.txt   (optional ``id name`` lines)

Class names come from the sorted subfolder names of ``train_dir`` or from the label file (else the label
ids as text). Every image of a split is checked up front (the file exists and its header is an image's);
the unreadable ones are listed by name in one :class:`DataError`, or dropped with
``Data.skip_bad_images: true`` (the count is logged and kept in ``dataset.skipped``). An image that fails
later (damaged past its header, deleted, unreadable) raises :class:`BadImageError` when it is read, which the
loaders (``ppvit.data.loader``) turn into one error on every rank, or skip. The images are
read by OpenCV (as ``ppvit.deploy.read_image`` reads inference inputs) and given to the same transform
pipelines as CIFAR-10's, as RGB HWC uint8 arrays (or PIL images for the ``pil`` pipelines).
"""
import logging
import os

import numpy as np
from paddle.io import Dataset

from ..io.images import IMAGE_EXTENSIONS, ImageReadError, read_image, walk_files
from .errors import BadImageError, DataError

IMAGE_SPLIT_KEYS = {"folder": ("train_dir", "val_dir"), "filelist": ("train_list", "val_list")}
SHOW_BAD = 10  # unreadable files named in the error (the count is always given)


# ---------------------------------------------------------------------------------------------- scanning
def _existing_dir(path, key):
    if not path:
        raise DataError(f"Data.{key} is not set: give the folder with one subfolder of images per class")
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path):
        raise DataError(f"Data.{key}: folder not found: {os.path.abspath(path)}")
    return path


def folder_classes(root, key="train_dir"):
    """Sorted subfolder names of ``root`` (hidden ones ignored): the class names, index = label."""
    root = _existing_dir(root, key)
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"Data.{key}: {os.path.abspath(root)} has no class subfolders; put each class's "
                        "images in a subfolder named after the class (e.g. train/cat/1.jpg, train/dog/2.jpg)")
    return classes


def scan_folder(root, classes, key):
    """[(path, label)] of the image files under ``root/<class>/`` (recursive, sorted), labels by ``classes``."""
    root = _existing_dir(root, key)
    exts = IMAGE_EXTENSIONS
    found = folder_classes(root, key)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(f"Data.{key}: class folders {unknown} of {os.path.abspath(root)} are not classes of "
                        f"Data.train_dir ({', '.join(classes)})")
    samples, empty = [], []
    for c in found:
        files = [f for f in walk_files(os.path.join(root, c)) if f.lower().endswith(exts)]
        if not files:
            empty.append(c)
        samples += [(f, classes.index(c)) for f in sorted(files)]
    if empty:
        raise DataError(f"Data.{key}: class folders without image files ({', '.join(exts)}) in "
                        f"{os.path.abspath(root)}: {', '.join(empty)}")
    return samples


def read_text_lines(path, key):
    """The lines of a text file of ``Data.<key>``: UTF-8, with or without a byte-order mark (Windows editors
    write one). Another encoding (e.g. GBK) is a ``DataError`` naming the file, the first bad byte and the fix."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"Data.{key} {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                        f"save it as UTF-8, e.g. iconv -f GBK -t UTF-8 {os.path.basename(path)} > utf8.txt "
                        "(GBK: the usual Chinese Windows encoding)") from None


def read_label_file(path):
    """PaddleClas's ``class_id_map_file``: ``id name`` lines (name may hold spaces) -> names by id 0..n-1."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise DataError(f"Data.class_id_map_file: file not found: {os.path.abspath(path)}")
    names = {}
    for n, line in enumerate(read_text_lines(path, "class_id_map_file"), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            raise DataError(f"Data.class_id_map_file {path} line {n}: expected 'class_id name', got {line.strip()!r}")
        i = int(parts[0])
        if i in names:
            raise DataError(f"Data.class_id_map_file {path} line {n}: class id {i} given twice")
        names[i] = parts[1].strip()
    if sorted(names) != list(range(len(names))):
        raise DataError(f"Data.class_id_map_file {path}: class ids must start at 0 and run 0..{len(names) - 1} "
                        f"without gaps, got {_id_range(sorted(names))}")
    return [names[i] for i in range(len(names))]


def read_file_list(path, key):
    """PaddleClas's ``path label`` list -> [(path, label)]; relative paths are relative to the list's folder.
    The label is the last field, so paths may contain spaces."""
    if not path:
        raise DataError(f"Data.{key} is not set: give a text file of 'image_path label' lines")
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise DataError(f"Data.{key}: file not found: {os.path.abspath(path)}")
    base = os.path.dirname(os.path.abspath(path))
    samples = []
    for n, line in enumerate(read_text_lines(path, key), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"Data.{key} {path} line {n}: expected 'image_path label' with a label id >= 0, "
                            f"got {line.strip()!r}")
        image = os.path.expandvars(os.path.expanduser(parts[0]))
        samples.append((image if os.path.isabs(image) else os.path.join(base, image), int(parts[1])))
    if not samples:
        raise DataError(f"Data.{key} {path} lists no images")
    return samples


def _held_out(samples, fraction, seed, num_classes):
    """Stratified split of ``samples``: ``fraction`` of each class (at least one image of a class with two
    or more) held out for validation, chosen by ``seed``; returns (train, val), each in the input order."""
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in samples])
    val = np.zeros(len(samples), bool)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val[rng.permutation(idx)[:k]] = True
    return [s for s, v in zip(samples, val) if not v], [s for s, v in zip(samples, val) if v]


def _check_split_keys(data_cfg):
    name = data_cfg["dataset"]
    if name == "folder":
        if data_cfg.get("val_dir") and data_cfg.get("val_split") is not None:
            raise DataError("Data.val_dir and Data.val_split are both set: use a separate validation folder "
                            "or hold out a fraction of Data.train_dir, not both")
        if not data_cfg.get("val_dir") and data_cfg.get("val_split") is None:
            raise DataError("Data.dataset=folder needs validation images: set Data.val_dir (a folder like "
                            "Data.train_dir) or Data.val_split (e.g. 0.2 holds out 20% of Data.train_dir)")
    elif data_cfg.get("val_split") is not None:
        raise DataError("Data.val_split applies to Data.dataset=folder only; a file list gives Data.val_list")


def dataset_class_names(data_cfg):
    """The class names of a ``folder`` or ``filelist`` config, without reading any image: the sorted
    subfolders of ``Data.train_dir``, or ``Data.class_id_map_file``'s names, or the list's label ids
    (``'0'``... up to the largest id of both lists)."""
    if data_cfg["dataset"] == "folder":
        return folder_classes(data_cfg.get("train_dir"))
    if data_cfg.get("class_id_map_file"):
        return read_label_file(data_cfg["class_id_map_file"])
    labels = {key: sorted({label for _, label in read_file_list(data_cfg.get(key), key)})
              for key in IMAGE_SPLIT_KEYS["filelist"]}
    ids = sorted(set(labels["train_list"]) | set(labels["val_list"]))
    if ids[0] != 0:  # ids from 1 would make a class 0 without images, and one class too many
        n = len(ids)
        raise DataError(f"label ids must start at 0 (class i is output i of the model): Data.train_list and "
                        f"Data.val_list use {_id_range(ids)}; renumber them 0..{n - 1}, or give "
                        "Data.class_id_map_file 'id name' lines naming every id from 0")
    return [str(i) for i in range(ids[-1] + 1)]


def _id_range(ids):
    """``1..4`` for consecutive ids, else the list."""
    return f"{ids[0]}..{ids[-1]}" if ids and ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 2 else str(ids)


def check_class_count(cfg, names):
    """``Arch.num_classes`` must be the data's class count: fewer outputs cannot learn every class, more give
    classes that no image has (a phantom class in every table, matrix and top-k). Raises ``ConfigError``."""
    from ..engine.config import ConfigError

    n, have = cfg["Arch"]["num_classes"], len(names)
    if n != have:
        data = cfg["Data"]
        where = {"folder": f" ({have} class folders in {data.get('train_dir')})",
                 "filelist": f" (label ids 0..{have - 1})"}.get(data["dataset"], "")
        shown = ", ".join(names[:12]) + (", ..." if have > 12 else "")
        raise ConfigError(f"Arch.num_classes is {n}, but Data.dataset {data['dataset']} has {have} classes{where}: "
                          f"{shown}; set -o Arch.num_classes={have}")


def split_samples(data_cfg, mode):
    """[(path, label)] of split ``mode`` ('train' or 'test') and the class names."""
    _check_split_keys(data_cfg)
    names = dataset_class_names(data_cfg)
    train_key, val_key = IMAGE_SPLIT_KEYS[data_cfg["dataset"]]
    if data_cfg["dataset"] == "folder":
        if data_cfg.get("val_split") is not None:
            train, val = _held_out(scan_folder(data_cfg["train_dir"], names, train_key), data_cfg["val_split"],
                                   data_cfg.get("split_seed", 0), len(names))
            if not val:
                raise DataError(f"Data.val_split={data_cfg['val_split']} holds out no image of "
                                f"{data_cfg['train_dir']}: too few images per class")
            return (train if mode == "train" else val), names, train_key
        key = train_key if mode == "train" else val_key
        return scan_folder(data_cfg[key], names, key), names, key
    key = train_key if mode == "train" else val_key
    samples = read_file_list(data_cfg.get(key), key)
    bad = sorted({label for _, label in samples if label >= len(names)})
    if bad:
        raise DataError(f"Data.{key}: label ids {bad} have no name in Data.class_id_map_file "
                        f"{data_cfg['class_id_map_file']} ({len(names)} classes, ids 0..{len(names) - 1})")
    return samples, names, key


# ---------------------------------------------------------------------------------------------- checking
def image_problem(path):
    """Why ``path`` cannot be used as an image (no such file, empty, not an image), or None. Reads only the
    header (PIL), so checking a large dataset up front costs little."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return "no such file"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"not an image ({type(e).__name__})"
    if w < 1 or h < 1:
        return "image of size 0"
    return None


def check_images(samples, key, skip):
    """``samples`` without the unreadable images; raises DataError listing them unless ``skip``."""
    bad = [(p, why) for p, why in ((p, image_problem(p)) for p, _ in samples) if why]
    if not bad:
        return samples, []
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:SHOW_BAD])
    more = f"; and {len(bad) - SHOW_BAD} more" if len(bad) > SHOW_BAD else ""
    if not skip:
        raise DataError(f"Data.{key}: {len(bad)} of {len(samples)} images cannot be read: {shown}{more}. "
                        "Fix or remove them, or skip them with -o Data.skip_bad_images=true")
    logging.getLogger("ppvit").warning(
        f"Data.{key}: skipped {len(bad)} of {len(samples)} images that cannot be read "
        f"(Data.skip_bad_images): {shown}{more}")
    drop = {p for p, _ in bad}
    kept = [s for s in samples if s[0] not in drop]
    if not kept:
        raise DataError(f"Data.{key}: none of its {len(samples)} images can be read")
    return kept, bad


# ---------------------------------------------------------------------------------------------- dataset
class ImageFileDataset(Dataset):
    """Image files with integer labels, yielding (CHW float32 ndarray, int64 label) like ``CifarDataset``;
    an image that cannot be read raises :class:`BadImageError` (naming the file, why and the fix).

    Attributes: ``samples`` [(path, label)], ``class_names``, ``skipped`` [(path, reason)] (the images
    dropped by ``Data.skip_bad_images``).
    """

    def __init__(self, samples, class_names, transform, backend="cv2", skipped=()):
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.transform, self.backend = transform, backend
        self.skipped = list(skipped)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        try:
            image = read_image(path, "RGB")  # as Cifar10 gives
        except ImageReadError as e:  # passed the check when the data was built: damaged or deleted since
            why = "it was deleted or moved" if not os.path.exists(path) else "the file is damaged"
            raise BadImageError(f"{e} ({why}; replace or remove it, or skip such files with "
                                "-o Data.skip_bad_images=true)", path) from None
        except OSError as e:  # e.g. its permissions changed
            raise BadImageError(f"cannot read {path}: {e.strerror or e} (fix its permissions, or skip such files "
                                "with -o Data.skip_bad_images=true)", path) from None
        if self.backend == "pil":
            from PIL import Image

            image = Image.fromarray(image)
        if self.transform is not None:
            image = self.transform(image)
        return np.asarray(image, dtype=np.float32), np.array(label, dtype=np.int64)


def build_image_dataset(data_cfg, mode, transform, backend):
    """The ``mode`` split of a ``folder`` or ``filelist`` config as an :class:`ImageFileDataset`."""
    samples, names, key = split_samples(data_cfg, mode)
    samples, skipped = check_images(samples, key, data_cfg.get("skip_bad_images", False))
    return ImageFileDataset(samples, names, transform, backend, skipped)


def skipped_images(dataset):
    """The images a dataset (possibly wrapped, e.g. by ``Data.limit``) skipped as unreadable."""
    while dataset is not None:
        if hasattr(dataset, "skipped"):
            return list(dataset.skipped)
        dataset = getattr(dataset, "dataset", None)
    return []
