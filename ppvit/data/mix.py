"""Batch-level MixUp and CutMix with soft targets, following timm's ``Mixup`` in batch mode: one lambda
per batch, each image mixed with its mirror in the batch (``x.flip(0)``), CutMix's lambda corrected to
the clipped box area. Random draws come from numpy's global RNG (or a given ``RandomState``), which the
training seed sets and checkpoints save, so runs and resumed runs are reproducible."""
import numpy as np
import paddle
import paddle.nn.functional as F

from .errors import DataError


def rand_box(img_h, img_w, lam, rng=np.random):
    """A box of area ~(1 - lam) of the image centred at a uniform random point, clipped to the image.
    Returns (y_low, y_high, x_low, x_high)."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    cy, cx = rng.randint(0, img_h), rng.randint(0, img_w)
    yl, yh = np.clip(cy - cut_h // 2, 0, img_h), np.clip(cy + cut_h // 2, 0, img_h)
    xl, xh = np.clip(cx - cut_w // 2, 0, img_w), np.clip(cx + cut_w // 2, 0, img_w)
    return int(yl), int(yh), int(xl), int(xh)


def soft_targets(labels, num_classes, lam, smoothing=0.0):
    """``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))``, one-hots optionally label-smoothed."""
    if not isinstance(labels, paddle.Tensor):
        labels = paddle.to_tensor(np.asarray(labels))
    labels = labels.reshape([-1]).astype("int64")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off

    def onehot(y):
        return F.one_hot(y, num_classes).astype("float32") * (on - off) + off

    return onehot(labels) * lam + onehot(labels.flip([0])) * (1.0 - lam)


class BatchMixer:
    """``(images [B, C, H, W], labels [B]) -> (mixed images, soft targets [B, num_classes])``.

    With probability ``mix_prob`` a batch is mixed: by CutMix with probability ``switch_prob`` when both
    alphas are > 0, else by whichever is on; lambda ~ Beta(alpha, alpha). The lambda and CutMix box of the
    last call are kept in ``last_lam`` / ``last_box`` for inspection.
    """

    def __init__(self, num_classes, mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=1.0, switch_prob=0.5,
                 smoothing=0.0, rng=None):
        for key, v in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if v < 0:
                raise DataError(f"Data.{key} must be >= 0, got {v}")
        for key, v in (("mix_prob", mix_prob), ("switch_prob", switch_prob)):
            if not 0.0 <= v <= 1.0:
                raise DataError(f"Data.{key} must be within [0, 1], got {v}")
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.mix_prob, self.switch_prob = float(mix_prob), float(switch_prob)
        self.smoothing = float(smoothing)
        self.rng = np.random if rng is None else rng
        self.last_lam, self.last_box = 1.0, None

    def _draw(self):
        """(lam, use_cutmix) for one batch, drawn in timm's order."""
        lam, use_cutmix = 1.0, False
        if self.rng.rand() < self.mix_prob:
            if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
                use_cutmix = self.rng.rand() < self.switch_prob
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            else:
                use_cutmix = self.cutmix_alpha > 0
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha))
        return lam, use_cutmix

    def __call__(self, images, labels):
        lam, use_cutmix = self._draw()
        box = None
        if lam < 1.0:
            flipped = images.flip([0])
            if use_cutmix:
                h, w = images.shape[-2:]
                box = rand_box(h, w, lam, self.rng)
                yl, yh, xl, xh = box
                lam = 1.0 - (yh - yl) * (xh - xl) / float(h * w)  # the area actually pasted
                if lam < 1.0:
                    images = images.clone()
                    images[:, :, yl:yh, xl:xh] = flipped[:, :, yl:yh, xl:xh]
            else:
                images = images * lam + flipped * (1.0 - lam)
        self.last_lam, self.last_box = lam, box
        return images, soft_targets(labels, self.num_classes, lam, self.smoothing)


def build_batch_mixer(data_cfg, num_classes, smoothing=0.0):
    """The BatchMixer a config's ``Data`` section asks for, or None when MixUp and CutMix are both off."""
    mixup_alpha = float(data_cfg.get("mixup_alpha") or 0.0)
    cutmix_alpha = float(data_cfg.get("cutmix_alpha") or 0.0)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise DataError(f"Data.mixup_alpha and Data.cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        return None
    mix_prob = data_cfg.get("mix_prob")
    switch_prob = data_cfg.get("switch_prob")
    return BatchMixer(num_classes, mixup_alpha, cutmix_alpha,
                      mix_prob=1.0 if mix_prob is None else float(mix_prob),
                      switch_prob=0.5 if switch_prob is None else float(switch_prob),
                      smoothing=smoothing)
