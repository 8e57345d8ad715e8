"""The training loop: a log line every ``Global.print_interval`` steps with a tqdm bar in between, one summary line
per epoch, validation, checkpoints and curves."""
import hashlib
import math
import os
import time

import numpy as np
import paddle
from tqdm import tqdm

from ..data import skipped_images
from ..io import write_json, write_text
from ..models.profile import count_params
from . import checkpoint as ckpt
from .config import dump
from .distributed import all_reduce_sum
from .evaluator import evaluate
from .logger import close_logging, setup_logging
from .plots import plot_learning_curve
from .vdl import open_visualdl


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without updating the weights."""


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


def _fmt_count(n):
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def train(engine, until_epoch=None):
    """Train ``engine`` from its start (or resume) point to ``Global.epochs``; returns the history dict.

    ``until_epoch`` stops after that many epochs (the schedule still spans ``Global.epochs``), leaving a
    ``latest`` checkpoint to resume from: for training in chunks.
    """
    e, g = engine, engine.cfg["Global"]
    out = e.run_dir
    log = setup_logging(os.path.join(out, "train.log") if e.is_main else None, console=e.is_main)
    try:
        if e.is_main:
            os.makedirs(out, exist_ok=True)
            write_text(os.path.join(out, "config.yaml"), dump(e.cfg))
        e.vdl = open_visualdl(e)  # Global.use_visualdl: <run dir>/vdl on rank 0, else None
        _log_header(e, log)
        stop = g["epochs"] if until_epoch is None else min(until_epoch, g["epochs"])
        for epoch in range(e.start_epoch, stop):
            start_batch = e.start_batch if epoch == e.start_epoch else 0
            stats = _train_one_epoch(e, epoch, start_batch, log)
            _end_of_epoch(e, epoch, stats, log)
        e.start_epoch, e.start_batch = max(stop, e.start_epoch), 0
        if stop < g["epochs"]:
            log.info(f"stopped after epoch {stop}/{g['epochs']}; resume with -o Global.checkpoints={e.run_dir}")
            return e.history.state_dict()
        if e.is_main:
            final_model = e.ema.module if e.ema is not None else e.model
            ckpt.save_weights(final_model, e.optimizer, os.path.join(out, "final_model"))
            best = e.best["top1"]
            log.info(f"done: {g['epochs']} epochs; best val top-1 {100 * best:.2f}% (epoch {e.best['epoch']})"
                     if best is not None else f"done: {g['epochs']} epochs")
            log.info(f"outputs in {out}")
        _dump_rank_digest(e)
        return e.history.state_dict()
    finally:
        if getattr(e, "vdl", None) is not None:
            e.vdl.close()
        close_logging()


def _log_header(e, log):
    cfg = e.cfg
    resumed = f", resumed from {e.resume_meta['path']} at epoch {e.start_epoch + 1} batch {e.start_batch}" \
        if e.resume_meta else ""
    log.info(f"ppvit train: {cfg['Global']['run_name']} | model {cfg['Arch']['name']} "
             f"({_fmt_count(count_params(e.model))} params) | device {e.device} x{e.world_size}{resumed}")
    log.info(f"data {cfg['Data']['dataset']}: {len(e.train_set)} train / {len(e.eval_set)} test images, "
             f"batch {cfg['Data']['batch_size']} x{e.world_size}, {e.steps_per_epoch} steps/epoch | "
             f"{cfg['Optimizer']['name']} lr {cfg['Optimizer']['lr']} ({cfg['Optimizer']['scheduler']}) | "
             f"{cfg['Global']['epochs']} epochs | outputs {e.run_dir}")
    for split, dataset in (("train", e.train_set), ("test", e.eval_set)):  # Data.skip_bad_images
        skipped = skipped_images(dataset)
        if skipped:
            log.warning(f"{split}: skipped {len(skipped)} unreadable images: {', '.join(p for p, _ in skipped[:10])}",
                        extra={"file_only": True})  # the console had it when the data was built
    log.debug("config:\n" + dump(cfg))


def _train_one_epoch(e, epoch, start_batch, log):
    g = e.cfg["Global"]
    epochs, spe = g["epochs"], e.steps_per_epoch
    model = e.train_model
    model.train()
    sampler = e.train_loader.batch_sampler
    sampler.set_epoch(epoch, start_batch)
    # running sums of this epoch (restored when resuming mid-epoch)
    sums = dict(e.resume_meta["epoch_sums"]) if (start_batch and e.resume_meta) else \
        {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
    bar = tqdm(total=spe, initial=start_batch, desc=f"epoch {epoch + 1}/{epochs}", disable=not e.is_main,
               dynamic_ncols=True, leave=False, mininterval=1.0)
    t_epoch = time.perf_counter()
    t0 = t_epoch
    seen = 0
    for batch, (images, labels) in enumerate(e.train_loader, start=start_batch):
        labels = labels.reshape([-1]).astype("int64")
        targets = labels
        if e.mixer is not None:
            images, targets = e.mixer(images, labels)
        lr = e.optimizer.get_lr()
        with paddle.amp.auto_cast(enable=e.use_amp):
            logits = model(images)
            loss = e.loss_fn(logits, targets)
        loss_value = float(loss)
        _check_finite(e, loss_value, epoch, batch, log)
        if e.scaler is not None:
            e.scaler.scale(loss).backward()
            e.scaler.step(e.optimizer)
            e.scaler.update()
        else:
            loss.backward()
            e.optimizer.step()
        e.optimizer.clear_grad()
        e.scheduler.step()
        if e.ema is not None:
            e.ema.update(e.model)
        e.global_step += 1

        n = labels.shape[0]
        sums["loss"] += loss_value * n
        sums["correct"] += float((logits.argmax(axis=-1) == labels).astype("float32").sum())
        sums["count"] += n
        seen += n
        e.history.add_step(step=e.global_step, epoch=epoch + 1, loss=loss_value, lr=lr)
        if e.vdl is not None:
            e.vdl.step(e.global_step, loss_value, lr)
        now = time.perf_counter()
        ips = seen * e.world_size / max(now - t0, 1e-9)
        bar.set_postfix_str(f"loss {loss_value:.4f} lr {lr:.2e} {ips:.1f} img/s", refresh=False)
        bar.update(1)
        if (batch + 1) % g["print_interval"] == 0 or batch + 1 == spe:
            done = batch + 1 - start_batch
            remaining = (spe - batch - 1) + spe * (epochs - epoch - 1)
            # console and train.log, as PaddleClas's print_batch_step (the bar shows the steps in between)
            log.info(f"epoch {epoch + 1}/{epochs} step {batch + 1}/{spe} lr {lr:.6g} loss {loss_value:.4f} "
                      f"ips {ips:.1f} img/s eta {_fmt_time((now - t0) / done * remaining)}")
        if g["save_interval"] and e.global_step % g["save_interval"] == 0 and batch + 1 < spe:
            sums["time"] += now - t_epoch
            t_epoch = now
            _save_latest(e, epoch, batch + 1, sums)
    bar.close()
    sums["time"] += time.perf_counter() - t_epoch
    return sums


def _check_finite(e, loss_value, epoch, batch, log):
    bad = not math.isfinite(loss_value)
    if e.world_size > 1:  # every rank must stop together, or the others hang in the next all-reduce
        bad = all_reduce_sum([float(bad)])[0] > 0
    if bad:
        latest = os.path.join(e.run_dir, ckpt.LATEST + ".pdstate")
        kept = f"the last good checkpoint is {latest}" if os.path.isfile(latest) else \
            "no checkpoint had been written yet"
        msg = (f"non-finite loss ({loss_value}) at epoch {epoch + 1}/{e.cfg['Global']['epochs']} step {batch + 1} "
               f"(global step {e.global_step + 1}); stopped before updating the weights; {kept}. "
               "Try a lower Optimizer.lr or Optimizer.grad_clip.")
        log.error(msg, extra={"file_only": True})  # the tool prints it to stderr
        raise NonFiniteLossError(msg)


def _end_of_epoch(e, epoch, sums, log):
    g = e.cfg["Global"]
    loss_sum, correct, count = all_reduce_sum([sums["loss"], sums["correct"], sums["count"]])
    train_loss, train_acc = loss_sum / max(count, 1), correct / max(count, 1)
    last = epoch + 1 == g["epochs"]
    val = None
    if (epoch + 1) % g["eval_interval"] == 0 or last:
        eval_model = e.ema.module if e.ema is not None else e.model
        val = evaluate(eval_model, e.eval_loader, e.eval_loss_fn, e.cfg["Arch"]["num_classes"])
    improved = val is not None and (e.best["top1"] is None or val["top1"] > e.best["top1"])
    if improved:
        e.best = {"top1": float(val["top1"]), "epoch": epoch + 1}
    lr = e.optimizer.get_lr()
    e.history.add_epoch(epoch=epoch + 1, step=e.global_step, lr=lr, train_loss=train_loss, train_acc=train_acc,
                        val_loss=val and val["loss"], val_top1=val and val["top1"], val_top5=val and val["top5"],
                        time=sums["time"], images_per_sec=count / max(sums["time"], 1e-9))
    if e.vdl is not None:
        e.vdl.epoch(epoch + 1, train_loss=train_loss, train_top1=100 * train_acc, lr=lr,
                    val_loss=val and val["loss"], val_top1=val and 100 * val["top1"], val_top5=val and 100 * val["top5"])
    if e.is_main:
        out = e.run_dir
        if improved:
            ckpt.save_weights(e.ema.module if e.ema is not None else e.model, e.optimizer,
                              os.path.join(out, "best_model"))
        _save_latest(e, epoch + 1, 0, None)
        e.history.save(os.path.join(out, "history.json"),
                       extra={"run": e.cfg["Global"]["run_name"], "best": e.best})
        loss_record, acc_record = e.history.records()
        plot_learning_curve(loss_record, "loss", "Loss", "Training steps", os.path.join(out, "loss_curve.png"))
        plot_learning_curve(acc_record, "acc", "Top-1 accuracy (%)", "Epoch", os.path.join(out, "acc_curve.png"),
                            percent=True)  # in %, as the log lines
    val_text = (f"val loss {val['loss']:.4f} top-1 {100 * val['top1']:.2f}% top-5 {100 * val['top5']:.2f}%"
                if val is not None else "val --")
    best_text = f"best {100 * e.best['top1']:.2f}% (epoch {e.best['epoch']})" if e.best["top1"] is not None else ""
    log.info(f"epoch {epoch + 1}/{g['epochs']} | train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
             f"{val_text} | lr {lr:.3g} | {sums['time']:.1f}s {count / max(sums['time'], 1e-9):.1f} img/s | "
             f"{best_text}{' *' if improved else ''}")


def _save_latest(e, epoch, batch, epoch_sums):
    """Commit a resume point: ``epoch``/``batch`` is where the resumed run starts."""
    if not e.is_main:
        return
    meta = {
        "epoch": epoch, "batch": batch, "global_step": e.global_step, "steps_per_epoch": e.steps_per_epoch,
        "best": dict(e.best), "history": e.history.state_dict(), "epoch_sums": epoch_sums,
        "mixer_rng": e.mixer.rng.get_state() if e.mixer is not None else None,
        "config": e.cfg,
    }
    ckpt.save_latest(e.run_dir, e.model, e.optimizer, e.scheduler, meta, ema=e.ema)


def _dump_rank_digest(e):
    """Test hook (``PPVIT_RANK_DIGEST_DIR``): each rank writes a SHA-256 of its final weights, so a test
    can check that data-parallel ranks ended identical. Off unless the variable is set."""
    folder = os.environ.get("PPVIT_RANK_DIGEST_DIR")
    if not folder:
        return
    h = hashlib.sha256()
    for name, value in sorted(e.model.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value.numpy()).tobytes())
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, f"rank{e.rank}.json"),
               {"rank": e.rank, "world_size": e.world_size, "sha256": h.hexdigest(), "global_step": e.global_step})
