"""Position tables for another input size, with timm's semantics, on numpy arrays (checkpoint values).

- ``resample_abs_pos_embed``: an absolute position embedding [1, prefix + H*W, C] resampled over its patch
  grid, as timm's ``timm.layers.resample_abs_pos_embed`` (``F.interpolate``, bicubic with antialiasing by
  default: PyTorch's separable antialiased kernels, or its plain bicubic/bilinear ones).
- ``resize_rel_pos_bias_table``: a flat relative-position bias table [(2H-1)*(2W-1) (+ extra), heads]
  resized for another window, as timm's ``timm.layers.resize_rel_pos_bias_table`` (BEiT's geometric
  spacing of the source offsets, then linear interpolation, timm's default without scipy).

Pure functions: no Paddle, no logging (the loader logs what it resampled).
"""
import math

import numpy as np

__all__ = ["resample_abs_pos_embed", "resize_rel_pos_bias_table", "resample_2d"]


# ------------------------------------------------------------------------------- separable resampling
def _cubic(x, a):
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def _triangle(x):
    return np.maximum(1.0 - np.abs(x), 0.0)


def _weights_antialias(in_size, out_size, mode):
    """[out, in] weights of PyTorch's antialiased resize (``_upsample_*2d_aa``, PIL's algorithm): the filter
    stretched by the scale when shrinking, taps inside the input only, each row normalised to sum 1."""
    scale = in_size / out_size
    support = (2.0 if mode == "bicubic" else 1.0) * max(scale, 1.0)
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = (np.arange(lo, hi) - center + 0.5) * invscale
        k = _cubic(x, -0.5) if mode == "bicubic" else _triangle(x)
        total = k.sum()
        w[i, lo:hi] = k / total if total != 0 else k
    return w


def _weights_plain(in_size, out_size, mode):
    """[out, in] weights of PyTorch's plain resize (align_corners=False): bicubic with a=-0.75 on 4 taps
    (clamped at the borders), bilinear on 2."""
    scale = in_size / out_size
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        src = scale * (i + 0.5) - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            i0 = int(math.floor(src))
            t = src - i0
            w[i, min(i0, in_size - 1)] += 1 - t
            w[i, min(i0 + 1, in_size - 1)] += t
        else:
            i0 = int(math.floor(src))
            t = src - i0
            for j, k in zip(range(i0 - 1, i0 + 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)):
                w[i, min(max(j, 0), in_size - 1)] += k
    return w


def resample_2d(x, size, interpolation="bicubic", antialias=True):
    """``x`` [..., H, W] resampled to ``size`` (h, w) as PyTorch's ``F.interpolate(mode=interpolation,
    align_corners=False, antialias=antialias)``; float64 arithmetic, returns ``x``'s dtype.

    Raises ``ValueError`` for another interpolation than 'bicubic' or 'bilinear'."""
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
    weights = _weights_antialias if antialias else _weights_plain
    h, w = x.shape[-2:]
    wy = weights(h, size[0], interpolation)  # out_h, H
    wx = weights(w, size[1], interpolation)  # out_w, W
    out = np.einsum("...hw,yh,xw->...yx", np.asarray(x, np.float64), wy, wx)
    return out.astype(np.asarray(x).dtype, copy=False)


# ------------------------------------------------------------------------------ absolute position embedding
def resample_abs_pos_embed(posemb, new_size, old_size=None, num_prefix_tokens=1, interpolation="bicubic",
                           antialias=True):
    """An absolute position embedding for another patch grid (timm's ``resample_abs_pos_embed``).

    posemb: [1, num_prefix_tokens + H*W, C] array (class/distillation tokens first); new_size: (h, w)
    patch grid; old_size: (H, W), or None for a square grid. Returns [1, num_prefix_tokens + h*w, C], the
    prefix tokens unchanged; ``posemb`` itself when the grid is already ``new_size``.

    Raises ``ValueError`` when the token count is not a square grid and ``old_size`` is not given.
    """
    posemb = np.asarray(posemb)
    num_pos = posemb.shape[1]
    if old_size is None:
        side = int(math.isqrt(num_pos - num_prefix_tokens))
        if side * side != num_pos - num_prefix_tokens:
            raise ValueError(f"a position embedding of {num_pos - num_prefix_tokens} grid tokens is not a square "
                             "grid; give old_size=(H, W)")
        old_size = (side, side)
    if tuple(old_size) == tuple(new_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], dim).transpose(0, 3, 1, 2)  # 1, C, H, W
    grid = resample_2d(grid, new_size, interpolation, antialias)
    grid = grid.transpose(0, 2, 3, 1).reshape(1, -1, dim)  # 1, h*w, C
    return np.concatenate([prefix, grid], axis=1) if num_prefix_tokens else grid


# ---------------------------------------------------------------------------- relative position bias table
def _geometric_offsets(src, dst):
    """BEiT's source offsets: ``src`` table entries placed at geometrically growing distances from the
    centre, the ratio found by bisection so that they span the ``dst`` table (timm's ``_calc``)."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if 1.0 * (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis)


def _interp_linear(points, values, targets):
    """timm's ``RegularGridInterpolator`` (linear on a rectilinear grid, clamped at the ends) on one 2-D grid:
    ``values`` [len(py), len(px)] at ``points`` (py, px), read at every (ty, tx) of ``targets``."""
    idx, dist = [], []
    for p, x in zip(points, targets):
        right = np.minimum(np.searchsorted(p, x, side="left"), len(p) - 1)  # torch.bucketize(right=False)
        left = np.clip(right - 1, 0, len(p) - 1)
        dl = np.maximum(x - p[left], 0.0)
        dr = np.maximum(p[right] - x, 0.0)
        both = (dl == 0) & (dr == 0)
        dl, dr = np.where(both, 1.0, dl), np.where(both, 1.0, dr)
        idx.append((left, right))
        dist.append((dl, dr))
    (yl, yr), (xl, xr) = idx
    (dyl, dyr), (dxl, dxr) = dist
    num = (values[yl][:, xl] * dyr[:, None] * dxr[None] + values[yl][:, xr] * dyr[:, None] * dxl[None]
           + values[yr][:, xl] * dyl[:, None] * dxr[None] + values[yr][:, xr] * dyl[:, None] * dxl[None])
    return num / ((dyl + dyr)[:, None] * (dxl + dxr)[None])


def resize_rel_pos_bias_table(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=None):
    """A flat relative-position bias table for another window (timm's ``resize_rel_pos_bias_table``).

    rel_pos_bias: [(2H-1)*(2W-1) + extra, heads], rows ordered (dy, dx) row-major with dy, dx from -(H-1)
    and -(W-1) (timm's ``gen_relative_position_index`` layout); extra rows (class-token biases) last, kept.
    new_window_size: (h, w) of the attended map; new_bias_shape: the new table's shape. old_window_size: (H, W),
    or None for a square source (or the destination's own window when the row count says so).
    Returns the table in ``new_bias_shape``; ``rel_pos_bias`` itself when the window is unchanged.

    Raises ``ValueError`` when the source window cannot be told from the row count.
    """
    rel_pos_bias = np.asarray(rel_pos_bias)
    dst = (new_window_size[0] * 2 - 1, new_window_size[1] * 2 - 1)
    src_rows, heads = rel_pos_bias.shape
    extra = new_bias_shape[0] - dst[0] * dst[1]
    if old_window_size is not None:
        src = (old_window_size[0] * 2 - 1, old_window_size[1] * 2 - 1)
    else:
        side = int(math.isqrt(src_rows - extra))
        if side * side == src_rows - extra:
            src = (side, side)
        elif src_rows - extra == dst[0] * dst[1]:
            src = dst
        else:
            raise ValueError(f"cannot tell the window of a relative position table of {src_rows} rows; "
                             "give old_window_size")
    if src == dst:
        return rel_pos_bias
    tokens = rel_pos_bias[src_rows - extra:] if extra else None
    table = rel_pos_bias[:src_rows - extra].astype(np.float64)
    points = (_geometric_offsets(src[0], dst[0]), _geometric_offsets(src[1], dst[1]))
    targets = tuple(np.arange(-(d // 2), d // 2 + 0.1, 1.0) for d in dst)
    out = np.stack([_interp_linear(points, table[:, h].reshape(src), targets).reshape(-1)
                    for h in range(heads)], axis=-1).astype(rel_pos_bias.dtype)
    return np.concatenate([out, tokens], axis=0) if extra else out
