"""Make tests/fixtures/resample_timm.npz, timm's position-table resampling on small random tables (needs torch
and timm; CI only reads the file written here):

    python scripts/make_fixtures_resample.py    # in a venv with torch and timm installed

Each case ``<name>`` stores its input ``<name>/in``, the arguments (``<name>/size``, ...) and timm's output
``<name>/out``:
- ``abs_*``: ``timm.layers.resample_abs_pos_embed`` (ConViT's pos_embed has no prefix token; ViT-style tables
  one), shrinking and growing the grid, bicubic with and without antialiasing, bilinear;
- ``rel_*``: ``timm.layers.resize_rel_pos_bias_table`` on flat [(2H-1)*(2W-1), heads] tables (CoAtNet's
  layout), shrinking (224 -> 64 px: 14x14 -> 4x4 and 7x7 -> 2x2 windows) and growing.
"""
import os

import numpy as np
import timm
import torch
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                   "resample_timm.npz")

ABS = {  # name: (old grid, new grid, prefix tokens, interpolation, antialias)
    "abs_shrink": ((14, 14), (4, 4), 0, "bicubic", True),
    "abs_grow": ((4, 4), (9, 9), 0, "bicubic", True),
    "abs_prefix_nonsquare": ((7, 7), (5, 3), 1, "bicubic", True),
    "abs_plain_bicubic": ((14, 14), (5, 5), 0, "bicubic", False),
    "abs_plain_bicubic_grow": ((4, 4), (7, 6), 0, "bicubic", False),
    "abs_bilinear": ((8, 8), (3, 5), 0, "bilinear", True),
    "abs_plain_bilinear": ((8, 8), (12, 5), 0, "bilinear", False),
}
REL = {  # name: (old window, new window, heads)
    "rel_shrink14": ((14, 14), (4, 4), 3),
    "rel_shrink7": ((7, 7), (2, 2), 3),
    "rel_grow": ((4, 4), (7, 7), 2),
}


def main():
    rng = np.random.RandomState(0)
    out = {"timm_version": np.array(timm.__version__)}
    for name, (old, new, prefix, mode, aa) in ABS.items():
        x = rng.randn(1, prefix + old[0] * old[1], 6).astype(np.float32)
        y = resample_abs_pos_embed(torch.from_numpy(x), list(new), old_size=list(old), num_prefix_tokens=prefix,
                                   interpolation=mode, antialias=aa)
        out.update({f"{name}/in": x, f"{name}/old": np.array(old), f"{name}/new": np.array(new),
                    f"{name}/prefix": np.array(prefix), f"{name}/mode": np.array(mode), f"{name}/antialias": np.array(aa),
                    f"{name}/out": y.numpy()})
    for name, (old, new, heads) in REL.items():
        x = rng.randn((2 * old[0] - 1) * (2 * old[1] - 1), heads).astype(np.float32)
        shape = ((2 * new[0] - 1) * (2 * new[1] - 1), heads)
        y = resize_rel_pos_bias_table(torch.from_numpy(x), new_window_size=new, new_bias_shape=shape)
        out.update({f"{name}/in": x, f"{name}/new": np.array(new), f"{name}/out": y.numpy()})
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} (timm {timm.__version__})")


if __name__ == "__main__":
    main()
