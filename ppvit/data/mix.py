"""MixUp and CutMix with soft targets: timm's ``Mixup`` (``timm/data/mixup.py``) on Paddle batches.

Modes: ``batch`` (one lambda per batch, every image mixed with its mirror in the batch, ``x.flip(0)``),
``pair`` (one per mirrored pair) and ``elem`` (one per image). CutMix's lambda is corrected to the clipped box
area; ``cutmix_minmax`` draws the box's sides as fractions of the image instead. All random draws come from
numpy (the global RNG, or a given ``RandomState`` in ``rng``) in timm's order, so under the same
``np.random.seed`` the images and targets equal timm's (tests/test_augment.py). The training engine gives its
mixer a stream of its own, saved with checkpoints, so runs and resumed runs are reproducible.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from .errors import DataError

MODES = ("batch", "pair", "elem")


def rand_box(img_h, img_w, lam, rng=np.random, margin=0.0):
    """timm's ``rand_bbox``: a box of area ~(1 - lam) of the image centred at a uniform random point (two
    ``randint`` draws: y then x), clipped to the image. Returns (y_low, y_high, x_low, x_high)."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
    cy = rng.randint(margin_y, img_h - margin_y)
    cx = rng.randint(margin_x, img_w - margin_x)
    yl, yh = np.clip(cy - cut_h // 2, 0, img_h), np.clip(cy + (cut_h + 1) // 2, 0, img_h)
    xl, xh = np.clip(cx - cut_w // 2, 0, img_w), np.clip(cx + (cut_w + 1) // 2, 0, img_w)
    return int(yl), int(yh), int(xl), int(xh)


def rand_box_minmax(img_h, img_w, minmax, rng=np.random):
    """timm's ``rand_bbox_minmax``: box sides uniform in [min, max) of the image's, position uniform."""
    cut_h = rng.randint(int(img_h * minmax[0]), int(img_h * minmax[1]))
    cut_w = rng.randint(int(img_w * minmax[0]), int(img_w * minmax[1]))
    yl = rng.randint(0, img_h - cut_h + 1)
    xl = rng.randint(0, img_w - cut_w + 1)
    return int(yl), int(yl + cut_h), int(xl), int(xl + cut_w)


def soft_targets(labels, num_classes, lam, smoothing=0.0):
    """``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))``, one-hots optionally label-smoothed
    (``smoothing / C`` off, ``1 - smoothing + smoothing / C`` on). ``lam``: a float or a [B] array.
    Returns [B, num_classes] float32."""
    if not isinstance(labels, paddle.Tensor):
        labels = paddle.to_tensor(np.asarray(labels))
    labels = labels.reshape([-1]).astype("int64")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off

    def onehot(y):
        return F.one_hot(y, num_classes).astype("float32") * (on - off) + off

    if not np.isscalar(lam):
        lam = paddle.to_tensor(np.asarray(lam, np.float32).reshape([-1, 1]))
    return onehot(labels) * lam + onehot(labels.flip([0])) * (1.0 - lam)


class Mixup:
    """timm's ``Mixup``: ``(images [B, C, H, W], labels [B]) -> (mixed images, soft targets [B, num_classes])``.

    Args (timm's names and defaults): ``mixup_alpha``, ``cutmix_alpha`` (each on when > 0; lambda ~
    Beta(alpha, alpha)), ``cutmix_minmax`` (box sides as [min, max] fractions; forces cutmix_alpha 1.0),
    ``prob`` (of mixing a batch/pair/image), ``switch_prob`` (of CutMix when both are on), ``mode`` (batch,
    pair, elem; pair and elem need an even batch), ``correct_lam``, ``label_smoothing``, ``num_classes``.
    ``rng``: numpy's global RNG by default. The input batch is not modified. The lambda and CutMix box of the
    last batch-mode call are kept in ``last_lam`` / ``last_box``. Bad arguments raise ``DataError``.
    """

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=0.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode="batch", correct_lam=True, label_smoothing=0.1, num_classes=1000, rng=None):
        for key, v in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if v < 0:
                raise DataError(f"Data.{key} must be >= 0, got {v}")
        for key, v in (("mix_prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= v <= 1.0:
                raise DataError(f"Data.{key} must be within [0, 1], got {v}")
        if mode not in MODES:
            raise DataError(f"Data.mix_mode must be one of {', '.join(MODES)}, got '{mode}'")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise DataError(f"Data.cutmix_minmax must be [min, max] with 0 <= min < max <= 1, got {cutmix_minmax}")
            cutmix_alpha = 1.0
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.cutmix_minmax = None if cutmix_minmax is None else [float(v) for v in cutmix_minmax]
        self.mix_prob, self.switch_prob = float(prob), float(switch_prob)
        self.mode, self.correct_lam = mode, bool(correct_lam)
        self.label_smoothing, self.num_classes = float(label_smoothing), int(num_classes)
        self.rng = np.random if rng is None else rng
        self.mixup_enabled = True
        self.last_lam, self.last_box = 1.0, None

    # ------------------------------------------------------------------------------------------ draws
    def _params_per_elem(self, n):
        rng = self.rng
        lam = np.ones(n, dtype=np.float32)
        use_cutmix = np.zeros(n, dtype=bool)
        if not self.mixup_enabled:
            return lam, use_cutmix
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.rand(n) < self.switch_prob
            lam_mix = np.where(use_cutmix, rng.beta(self.cutmix_alpha, self.cutmix_alpha, size=n),
                               rng.beta(self.mixup_alpha, self.mixup_alpha, size=n))
        elif self.mixup_alpha > 0:
            lam_mix = rng.beta(self.mixup_alpha, self.mixup_alpha, size=n)
        else:
            use_cutmix = np.ones(n, dtype=bool)
            lam_mix = rng.beta(self.cutmix_alpha, self.cutmix_alpha, size=n)
        lam = np.where(rng.rand(n) < self.mix_prob, lam_mix.astype(np.float32), lam)
        return lam, use_cutmix

    def _params_per_batch(self):
        lam, use_cutmix = 1.0, False
        if self.mixup_enabled and self.rng.rand() < self.mix_prob:
            if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
                use_cutmix = self.rng.rand() < self.switch_prob
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            else:
                use_cutmix = self.cutmix_alpha > 0
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha))
        return lam, use_cutmix

    def _box_and_lam(self, h, w, lam):
        if self.cutmix_minmax is not None:
            box = rand_box_minmax(h, w, self.cutmix_minmax, self.rng)
        else:
            box = rand_box(h, w, lam, self.rng)
        if self.correct_lam or self.cutmix_minmax is not None:
            yl, yh, xl, xh = box
            lam = 1.0 - (yh - yl) * (xh - xl) / float(h * w)
        return box, lam

    # ----------------------------------------------------------------------------------------- mixing
    def _mix_batch(self, images):
        lam, use_cutmix = self._params_per_batch()
        box = None
        if lam < 1.0:
            flipped = images.flip([0])
            if use_cutmix:
                box, lam = self._box_and_lam(images.shape[-2], images.shape[-1], lam)
                yl, yh, xl, xh = box
                if yh > yl and xh > xl:  # an empty box (clipped away) pastes nothing
                    images = images.clone()
                    images[:, :, yl:yh, xl:xh] = flipped[:, :, yl:yh, xl:xh]
            else:
                images = images * lam + flipped * (1.0 - lam)
        self.last_lam, self.last_box = lam, box
        return images, lam

    def _mix_elems(self, images, pair):
        n = len(images)
        if n % 2:
            raise DataError(f"Data.mix_mode={self.mode} needs an even batch size, got {n}")
        x = images.numpy()
        orig = x.copy()
        lam_batch, use_cutmix = self._params_per_elem(n // 2 if pair else n)
        h, w = x.shape[-2:]
        for i in range(len(lam_batch)):
            j = n - i - 1
            lam = lam_batch[i]
            if lam == 1.0:
                continue
            if use_cutmix[i]:
                (yl, yh, xl, xh), lam = self._box_and_lam(h, w, lam)
                x[i][:, yl:yh, xl:xh] = orig[j][:, yl:yh, xl:xh]
                if pair:
                    x[j][:, yl:yh, xl:xh] = orig[i][:, yl:yh, xl:xh]
                lam_batch[i] = lam
            else:
                x[i] = x[i] * lam + orig[j] * (1 - lam)
                if pair:
                    x[j] = x[j] * lam + orig[i] * (1 - lam)
        if pair:
            lam_batch = np.concatenate((lam_batch, lam_batch[::-1]))
        return paddle.to_tensor(x), lam_batch

    def __call__(self, images, labels):
        if self.mode == "batch":
            images, lam = self._mix_batch(images)
        else:
            images, lam = self._mix_elems(images, pair=self.mode == "pair")
        return images, soft_targets(labels, self.num_classes, lam, self.label_smoothing)


def build_batch_mixer(data_cfg, num_classes, smoothing=0.0):
    """The :class:`Mixup` a config's ``Data`` section asks for (``mixup_alpha``, ``cutmix_alpha``,
    ``cutmix_minmax``, ``mix_prob``, ``switch_prob``, ``mix_mode``), or None when MixUp and CutMix are off.
    Label smoothing of the mixed targets is ``Loss.smoothing`` (LabelSmoothingCrossEntropy smooths any soft
    target the same way, which equals timm's ``label_smoothing``), so ``smoothing`` defaults to 0 here."""
    mixup_alpha = float(data_cfg.get("mixup_alpha") or 0.0)
    cutmix_alpha = float(data_cfg.get("cutmix_alpha") or 0.0)
    minmax = data_cfg.get("cutmix_minmax")
    if mixup_alpha <= 0 and cutmix_alpha <= 0 and minmax is None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise DataError(f"Data.mixup_alpha and Data.cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        return None
    mix_prob, switch_prob = data_cfg.get("mix_prob"), data_cfg.get("switch_prob")
    return Mixup(mixup_alpha, cutmix_alpha, cutmix_minmax=minmax,
                 prob=1.0 if mix_prob is None else float(mix_prob),
                 switch_prob=0.5 if switch_prob is None else float(switch_prob),
                 mode=data_cfg.get("mix_mode") or "batch", label_smoothing=smoothing, num_classes=num_classes)
