"""The one image-file reader (inference, LIME, the prediction grids): OpenCV, the notebooks' image backend."""
import os

import numpy as np

from ..errors import PpvitError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "walk_files"]

# what counts as an image when a folder is listed (inference inputs, Data.dataset: folder)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


class ImageReadError(PpvitError):
    """A file that cannot be read as an image; the message names the file."""


def read_image(path, color="BGR"):
    """Read an image file as HWC uint8, ``color`` ``"BGR"`` (as cv2 gives it) or ``"RGB"``; gray and alpha
    images become 3-channel. Raises ``ImageReadError`` naming the file when it is missing or not an image."""
    import cv2

    if color not in ("BGR", "RGB"):
        raise ValueError(f"color must be 'BGR' or 'RGB', got {color!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"cannot read {path} as an image: no such file")
    # imdecode from bytes: handles non-ASCII paths and does not print cv2 warnings for non-images
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot read {path} as an image: not an image file, or an unsupported format")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color == "RGB" else image  # a channel swap, fast


def walk_files(folder):
    """Every file under ``folder``, recursively, hidden files and folders left out. Symbolic links to files
    and folders are followed (as timm's and torchvision's folder datasets do); a folder reached again through a
    link (a loop, or two links to one folder) is walked once."""
    seen, files = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        files += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
    return files
