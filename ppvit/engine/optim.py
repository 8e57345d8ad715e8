"""Optimizers and per-step learning-rate schedules.

The notebooks step ``CosineAnnealingDecay(T_max=steps_per_epoch * epochs)`` once per batch. The schedules
here are closed-form functions of the step count, so a resumed run needs nothing but ``last_epoch`` (the
number of steps taken) to continue on exactly the same curve.
"""
import math

import numpy as np
import paddle


class StepSchedule(paddle.optimizer.lr.LRScheduler):
    """Per-step schedule: optional linear warmup, then ``cosine``, ``constant`` or ``onecycle``.

    - cosine: ``eta_min + (lr - eta_min) * (1 + cos(pi * t / T)) / 2`` over the steps after warmup; with no
      warmup this is the notebooks' CosineAnnealingDecay with ``T_max = steps_per_epoch * epochs``.
    - onecycle: locuslab/convmixer-cifar10's piecewise-linear curve, 0 -> lr at 2/5 of the epochs,
      -> lr/20 at 4/5, -> 0 at the end, evaluated at ``epoch + (i + 1) / steps_per_epoch``.
    """

    def __init__(self, learning_rate, kind, total_steps, steps_per_epoch, epochs, warmup_steps=0,
                 eta_min=0.0, last_epoch=-1):
        self.kind = kind
        self.total_steps = max(int(total_steps), 1)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.epochs = epochs
        self.warmup_steps = int(warmup_steps)
        self.eta_min = eta_min
        super().__init__(learning_rate, last_epoch)

    def get_lr(self):
        step, base = self.last_epoch, self.base_lr
        if self.kind == "onecycle":
            t = (step + 1) / self.steps_per_epoch
            e = self.epochs
            return float(np.interp(t, [0, e * 2 // 5, e * 4 // 5, e], [0, base, base / 20.0, 0]))
        if step < self.warmup_steps:
            return base * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return base
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(step - self.warmup_steps, span)
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / span)) / 2


def scaled_lr(opt_cfg, global_batch):
    """The peak lr of a run whose optimizer steps see ``global_batch`` images (Data.batch_size x processes x
    Optimizer.grad_accum_steps): ``Optimizer.lr``, or with ``Optimizer.lr_base_size`` the linear scaling rule
    ``lr x global_batch / lr_base_size`` (Goyal et al. 2017; DeiT's and ConViT's ``lr x batch / 512``)."""
    base = opt_cfg.get("lr_base_size")
    return opt_cfg["lr"] * global_batch / base if base else opt_cfg["lr"]


def build_scheduler(opt_cfg, steps_per_epoch, epochs, global_batch=None):
    """The per-step schedule over ``steps_per_epoch`` optimizer steps per epoch (batches / grad_accum_steps,
    rounded up), peaking at ``scaled_lr(opt_cfg, global_batch)`` (``Optimizer.lr`` when ``global_batch`` is
    None)."""
    lr = opt_cfg["lr"] if global_batch is None else scaled_lr(opt_cfg, global_batch)
    return StepSchedule(
        lr, opt_cfg["scheduler"], total_steps=steps_per_epoch * epochs,
        steps_per_epoch=steps_per_epoch, epochs=epochs,
        warmup_steps=round(opt_cfg["warmup_epochs"] * steps_per_epoch), eta_min=opt_cfg["eta_min"])


def build_optimizer(opt_cfg, model, scheduler):
    """Adam and SGD decay every parameter (L2, as the notebooks' ``Adam(weight_decay=...)``); AdamW
    (decoupled) skips the names the model lists in ``no_weight_decay()`` (positional tables, tokens)."""
    params = model.parameters()
    clip = paddle.nn.ClipGradByGlobalNorm(opt_cfg["grad_clip"]) if opt_cfg["grad_clip"] else None
    wd = opt_cfg["weight_decay"]
    name = opt_cfg["name"]
    if name == "Adam":
        return paddle.optimizer.Adam(learning_rate=scheduler, parameters=params, weight_decay=wd or None,
                                     grad_clip=clip)
    if name == "AdamW":
        skip = _no_decay_param_names(model)
        return paddle.optimizer.AdamW(learning_rate=scheduler, parameters=params, weight_decay=wd,
                                      apply_decay_param_fun=lambda n: n not in skip, grad_clip=clip)
    if name == "SGD":
        return paddle.optimizer.Momentum(learning_rate=scheduler, parameters=params,
                                         momentum=opt_cfg["momentum"], weight_decay=wd or None,
                                         grad_clip=clip)
    raise ValueError(f"unknown optimizer {name}")


def _no_decay_param_names(model):
    """Paddle's ``apply_decay_param_fun`` receives a parameter's unique name, not its structured one."""
    wanted = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {p.name for n, p in model.named_parameters() if n in wanted or n.split(".")[-1] in wanted}
