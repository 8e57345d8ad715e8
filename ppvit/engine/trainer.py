"""The training loop: a log line every ``Global.print_interval`` steps with a tqdm bar in between, one summary line
per epoch, validation, checkpoints and curves."""
import contextlib
import hashlib
import math
import os
import signal
import time

import numpy as np
import paddle
from tqdm import tqdm

from ..data import skipped_images
from ..io import write_json, write_text
from ..models.profile import count_params
from . import checkpoint as ckpt
from .config import SAVED_CONFIG, dump
from .distributed import all_reduce_sum, non_finite_tensors, sync_buffers
from .evaluator import evaluate
from .logger import close_logging, format_lr, setup_logging
from .memory import check_memory
from .plots import plot_learning_curve
from .resume import clear_run_folder
from .signals import StopWatch, exit_code, shutdown_loader_iterator, signal_name, stop_children
from .runfiles import run_file
from .state import HISTORY_FILE
from .vdl import open_visualdl

TRAIN_LOG = run_file("train.log", training=True)
CONFIG_FILE = run_file(SAVED_CONFIG, training=True)
CURVES = (run_file("loss_curve.png", training=True), run_file("acc_curve.png", training=True))


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

    An epoch ends with one commit (``latest.pdstate``) followed by the files that follow from it (``best_model``
    when the epoch is the best, ``history.json``, the curves, ``final_model`` after the last epoch); a resume
    writes again whichever of them a kill left out, so a stopped run resumes to the uninterrupted result.

    Raises ``NonFiniteLossError`` when the training loss, the validation loss or the weights stop being
    finite (nothing of that epoch is saved) and ``TrainingInterrupted`` on Ctrl-C, SIGTERM or SIGHUP
    (``engine/signals.py``); both say what was kept.
    """
    e, g, state = engine, engine.cfg["Global"], engine.state
    out = e.run_dir
    removed = None
    if e.is_main and not e.resumed_from and (g["overwrite"] or e.restart_leftovers):
        removed = clear_run_folder(out, training_only=not g["overwrite"])  # before train.log is opened
    log = setup_logging(os.path.join(out, TRAIN_LOG) if e.is_main else None, console=e.is_main)
    watch = StopWatch()  # Ctrl-C, SIGTERM, SIGHUP; an error Paddle raises after one is still the stop
    state.pending = False
    vdl = None
    try:
        watch.start()
        if e.is_main:
            if removed:
                why = "Global.overwrite: replaced the earlier run" if g["overwrite"] else \
                    "an earlier start left no checkpoint: starting the run again"
                log.info(f"{why} in {out} (removed {', '.join(removed)})")
            os.makedirs(out, exist_ok=True)
            write_text(os.path.join(out, CONFIG_FILE), dump(e.cfg, header=(
                f"The config run {g['run_name']} trains with: the config file and its -o overrides, every key "
                f"(defaults included).\nEvaluate, export, explain or run this run's weights with it: -c {out}")))
        vdl = open_visualdl(e)  # Global.use_visualdl: <run dir>/vdl on rank 0, else None
        _log_header(e, log)
        e.state.last_saved = (state.epoch, state.batch, state.global_step) if e.resumed_from else None
        if e.resumed_from:
            with watch.deferred():  # the files that follow the checkpoint, whichever a kill left out
                e.state.pending = e.is_main
                _write_after_commit(e)
            if state.finished and e.is_main:
                log.info(f"the run had trained all its {g['epochs']} epochs; the files that follow its last "
                         "checkpoint are written")
        first_epoch, first_batch = state.epoch, state.batch
        stop = g["epochs"] if until_epoch is None else min(until_epoch, g["epochs"])
        if e.is_main and stop > first_epoch:
            check_memory(e, log)  # a CPU run that would exceed the available RAM is announced before it starts
        for epoch in range(first_epoch, stop):
            start_batch = first_batch if epoch == first_epoch else 0
            stats = _train_one_epoch(e, epoch, start_batch, log, vdl)
            _end_of_epoch(e, epoch, stats, log, vdl, watch)
        state.epoch, state.batch = max(stop, state.epoch), 0
        if stop < g["epochs"]:
            log.info(f"stopped after epoch {stop}/{g['epochs']}; resume with -o Global.checkpoints={e.run_dir}")
            return state.history.state_dict()
        if e.is_main:
            best = state.best["top1"]
            log.info(f"done: {g['epochs']} epochs; best val top-1 {100 * best:.2f}% (epoch {state.best['epoch']})"
                     if best is not None else f"done: {g['epochs']} epochs")
            log.info(f"outputs in {out}")
        _dump_rank_digest(e)
        return state.history.state_dict()
    except Exception as err:
        if watch.signum is None:
            raise
        _interrupted(e, log, err, watch.signum, watch)
    except KeyboardInterrupt as err:
        _interrupted(e, log, err, watch.signum or getattr(err, "signum", None) or signal.SIGINT, watch)
    finally:
        watch.stop()
        if vdl is not None:
            vdl.close()
        close_logging()


def _interrupted(e, log, err, signum, watch):
    stop_children(keep=watch.children_before)  # DataLoader workers of the interrupted epoch: none may outlive the run
    if e.state.pending and e.is_main:  # stopped between a commit and its files: write them from the committed state
        try:
            _write_after_commit(e)
        except BaseException as late:  # noqa: BLE001 - a second interrupt: the resume writes them
            log.debug(f"the files of the last checkpoint were not all written ({type(late).__name__}); a resume "
                      "writes them")
    msg = f"interrupted ({signal_name(signum)}); {_kept(e)}"
    log.error(msg, extra={"file_only": True})  # the tool prints it to stderr
    log.debug(f"the interrupt surfaced as {type(err).__name__}: {str(err)[:300]}")
    raise TrainingInterrupted(msg, exit_code(signum)) from None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP during training; the message says which checkpoint was kept and how to go on.
    ``exit_code``: 128 + the signal number (130, 143, 129)."""

    def __init__(self, msg, code=130):
        super().__init__(msg)
        self.exit_code = code


def _kept(e):
    """What a stopped run leaves behind and how to go on from it, in one sentence."""
    latest = os.path.join(e.run_dir, ckpt.LATEST + ".pdstate")
    if not os.path.isfile(latest) or e.state.last_saved is None:
        return ("no checkpoint had been written yet (nothing to resume); the same command starts the run again "
                "in {}".format(e.run_dir))
    epoch, batch, step = e.state.last_saved
    epochs = e.cfg["Global"]["epochs"]
    if epoch >= epochs and batch == 0:
        if e.state.pending:
            return (f"all {epochs} epochs were trained ({latest}), but not all of the run's files were written: "
                    f"-o Global.checkpoints={e.run_dir} writes them")
        return f"all {epochs} epochs were trained and the run's files are complete in {e.run_dir}"
    where = f"after epoch {epoch}" if batch == 0 else f"at epoch {epoch + 1} batch {batch}"
    return (f"the last good checkpoint is {latest} ({where}, step {step}); resume with "
            f"-o Global.checkpoints={e.run_dir}")


def _log_header(e, log):
    cfg = e.cfg
    resumed = f", resumed from {e.resumed_from} at epoch {e.start_epoch + 1} batch {e.start_batch}" \
        if e.resumed_from else ""
    log.info(f"ppvit train: {cfg['Global']['run_name']} | model {cfg['Arch']['name']} "
             f"({_fmt_count(count_params(e.model))} params) | device {e.device} x{e.world_size}{resumed}")
    opt = cfg["Optimizer"]
    accum = f" x{e.accum_steps} accumulated" if e.accum_steps > 1 else ""
    updates = f" ({e.updates_per_epoch} optimizer steps)" if e.accum_steps > 1 else ""
    lr = format_lr(opt["lr"]) if not opt["lr_base_size"] else \
        f"{format_lr(opt['lr'])} x {e.global_batch}/{opt['lr_base_size']} = {format_lr(e.scheduler.base_lr)}"
    log.info(f"data {cfg['Data']['dataset']}: {len(e.train_set)} train / {len(e.eval_set)} test images, "
             f"batch {cfg['Data']['batch_size']} x{e.world_size}{accum} = effective batch {e.global_batch}, "
             f"{e.steps_per_epoch} steps/epoch{updates} | {opt['name']} lr {lr} ({opt['scheduler']}) | "
             f"{cfg['Global']['epochs']} epochs | outputs {e.run_dir}")
    plan = e.resume_plan
    if plan["lr"]:
        log.info(f"Optimizer.lr changed on resume: {format_lr(plan['lr'][0])} -> {format_lr(plan['lr'][1])}, from the "
                 "first resumed step")
    if plan["extend"]:
        old, new = plan["extend"]
        added = f"epoch {new}" if new == old + 1 else f"epochs {old + 1}-{new}"
        log.info(f"Global.extend: extending the finished {old}-epoch run to {new} epochs; {added} follow a new "
                 f"{cfg['Optimizer']['scheduler']} schedule from lr {format_lr(cfg['Optimizer']['lr'])} (no warmup)")
    for split, dataset in (("train", e.train_set), ("test", e.eval_set)):  # Data.skip_bad_images
        skipped = skipped_images(dataset)
        if skipped:
            log.warning(f"{split}: skipped {len(skipped)} unreadable images: {', '.join(p for p, _ in skipped[:10])}",
                        extra={"file_only": True})  # the console had it when the data was built
    log.debug("config:\n" + dump(cfg))


def _train_one_epoch(e, epoch, start_batch, log, vdl):
    g, state = e.cfg["Global"], e.state
    epochs, spe, accum = g["epochs"], e.steps_per_epoch, e.accum_steps
    model = e.train_model
    model.train()
    sampler = e.train_loader.batch_sampler
    sampler.set_epoch(epoch, start_batch)
    # running sums of this epoch (restored when resuming mid-epoch)
    sums = dict(state.epoch_sums) if (start_batch and state.epoch_sums) else \
        {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
    bar = tqdm(total=spe, initial=start_batch, desc=f"epoch {epoch + 1}/{epochs}", disable=not e.is_main,
               dynamic_ncols=True, leave=False, mininterval=1.0)
    t_epoch = time.perf_counter()
    t0 = t_epoch
    seen = 0
    batches = iter(e.train_loader)
    try:
        for batch, (images, labels) in enumerate(batches, start=start_batch):
            labels = labels.reshape([-1]).astype("int64")
            targets = labels
            if e.mixer is not None:
                images, targets = e.mixer(images, labels)
            lr = e.optimizer.get_lr()  # what this step's optimizer.step() uses; the scheduler moves on after it
            # gradient accumulation: an optimizer step after every grad_accum_steps batches and after the epoch's
            # last; each batch's loss weighs 1 / (batches in its group), as one batch of them all would
            group = min(accum, spe - batch // accum * accum)
            update = (batch + 1) % accum == 0 or batch + 1 == spe
            # data parallel: gradients are all-reduced once per optimizer step
            with model.no_sync() if (not update and e.world_size > 1) else contextlib.nullcontext():
                with paddle.amp.auto_cast(enable=e.use_amp):
                    logits = model(images)
                    loss = e.loss_fn(logits, targets)
                loss_value = float(loss)
                _check_finite(e, loss_value, epoch, batch, log)
                scaled = loss / group if group > 1 else loss
                (e.scaler.scale(scaled) if e.scaler is not None else scaled).backward()
            if update:
                if e.scaler is not None:
                    e.scaler.step(e.optimizer)
                    e.scaler.update()
                else:
                    e.optimizer.step()
                e.optimizer.clear_grad()
                e.scheduler.step()
                if e.ema is not None:
                    e.ema.update(e.model)
            state.global_step += 1

            n = labels.shape[0]
            sums["loss"] += loss_value * n
            sums["correct"] += float((logits.argmax(axis=-1) == labels).astype("float32").sum())
            sums["count"] += n
            seen += n
            state.history.add_step(step=state.global_step, epoch=epoch + 1, loss=loss_value, lr=lr)
            if vdl is not None:
                vdl.step(state.global_step, loss_value, lr)
            now = time.perf_counter()
            ips = seen * e.world_size / max(now - t0, 1e-9)
            bar.set_postfix_str(f"loss {loss_value:.4f} lr {format_lr(lr)} {ips:.1f} img/s", refresh=False)
            bar.update(1)
            if (batch + 1) % g["print_interval"] == 0 or batch + 1 == spe:
                done = batch + 1 - start_batch
                remaining = (spe - batch - 1) + spe * (epochs - epoch - 1)
                # console and train.log, as PaddleClas's print_batch_step (the bar shows the steps in between)
                log.info(f"epoch {epoch + 1}/{epochs} step {batch + 1}/{spe} lr {format_lr(lr)} "
                         f"loss {loss_value:.4f} ips {ips:.1f} img/s eta {_fmt_time((now - t0) / done * remaining)}")
            # a mid-epoch checkpoint after the optimizer step of the group in which save_interval was reached
            due = g["save_interval"] and state.global_step // g["save_interval"] > \
                (state.global_step - batch % accum - 1) // g["save_interval"]
            if due and update and batch + 1 < spe:
                sums["time"] += now - t_epoch
                t_epoch = now
                sync_buffers(e.model, e.ema.module if e.ema is not None else None)
                _check_weights(e, f"at epoch {epoch + 1}/{epochs} step {batch + 1}", log)
                _save_latest(e, epoch, batch + 1, sums)
    except BaseException:
        shutdown_loader_iterator(batches)  # its workers stop now, not when a traceback lets the iterator go
        raise
    finally:
        bar.close()  # before any message: a stop or an interrupt is then printed on a line of its own
    sums["time"] += time.perf_counter() - t_epoch
    return sums


def _stop(e, msg, log):
    log.error(msg, extra={"file_only": True})  # the tool prints it to stderr
    raise NonFiniteLossError(msg)


def _check_finite(e, loss_value, epoch, batch, log):
    bad = not math.isfinite(loss_value)
    if e.world_size > 1:  # every rank must stop together, or the others hang in the next all-reduce
        bad = all_reduce_sum([float(bad)])[0] > 0
    if bad:
        _stop(e, f"non-finite loss ({loss_value}) at epoch {epoch + 1}/{e.cfg['Global']['epochs']} step {batch + 1} "
                 f"(global step {e.state.global_step + 1}); stopped before updating the weights; {_kept(e)}, "
                 "after lowering Optimizer.lr or setting Optimizer.grad_clip", log)


def _check_weights(e, where, log):
    """Weights (parameters and buffers, EMA included) must be finite before they are evaluated or saved."""
    bad = non_finite_tensors(e.model, e.ema.module if e.ema is not None else None)
    if e.world_size > 1:  # every rank must stop together
        if all_reduce_sum([float(bool(bad))])[0] > 0 and not bad:
            bad = ["(on another rank)"]
    if bad:
        shown = ", ".join(bad[:5]) + (f" ... ({len(bad)} in all)" if len(bad) > 5 else "")
        _stop(e, f"non-finite weights {where}: {shown}; nothing of this epoch was saved; {_kept(e)}, after "
                 "lowering Optimizer.lr or setting Optimizer.grad_clip", log)


def _end_of_epoch(e, epoch, sums, log, vdl, watch):
    g, state = e.cfg["Global"], e.state
    loss_sum, correct, count = all_reduce_sum([sums["loss"], sums["correct"], sums["count"]])
    train_loss, train_acc = loss_sum / max(count, 1), correct / max(count, 1)
    last = epoch + 1 == g["epochs"]
    # one model on every rank (BatchNorm statistics averaged) before it is evaluated or saved
    eval_model = e.ema.module if e.ema is not None else e.model
    sync_buffers(e.model, e.ema.module if e.ema is not None else None)
    _check_weights(e, f"after epoch {epoch + 1}/{g['epochs']}", log)
    val = raw = None
    if (epoch + 1) % g["eval_interval"] == 0 or last:
        val = evaluate(eval_model, e.eval_loader, e.eval_loss_fn, e.cfg["Arch"]["num_classes"])
        if not math.isfinite(val["loss"]):
            _stop(e, f"non-finite validation loss ({val['loss']}) after epoch {epoch + 1}/{g['epochs']} (the training "
                     f"loss was {train_loss:.4f}); nothing of this epoch was saved; {_kept(e)}, after lowering "
                     "Optimizer.lr or setting Optimizer.grad_clip", log)
        if e.ema is not None:  # as timm: the EMA weights decide the best epoch, the raw ones are reported beside
            raw = evaluate(e.model, e.eval_loader, e.eval_loss_fn, e.cfg["Arch"]["num_classes"])
    improved = val is not None and (state.best["top1"] is None or val["top1"] > state.best["top1"])
    if improved:
        state.best = {"top1": float(val["top1"]), "epoch": epoch + 1}
    # the lr of the epoch's last step (the scheduler has already moved on to the next step's); the history
    # records every step and is restored on resume, so it holds it for a resumed epoch too
    lr = state.history.steps["lr"][-1]
    state.history.add_epoch(epoch=epoch + 1, step=state.global_step, lr=lr, train_loss=train_loss,
                            train_acc=train_acc, val_loss=val and val["loss"], val_top1=val and val["top1"],
                            val_top5=val and val["top5"], val_top1_raw=raw and raw["top1"], time=sums["time"],
                            images_per_sec=count / max(sums["time"], 1e-9))
    if vdl is not None:
        vdl.epoch(epoch + 1, train_loss=train_loss, train_top1=100 * train_acc, lr=lr,
                    val_loss=val and val["loss"], val_top1=val and 100 * val["top1"], val_top5=val and 100 * val["top5"])
    with watch.deferred():  # a stop signal here ends the run once the commit and its files are all written
        _save_latest(e, epoch + 1, 0, None)  # the commit (a kill before it redoes this epoch on resume) and its files
    weights = " (EMA weights)" if e.ema is not None else ""  # the weights validated, saved and ranked
    val_text = (f"val{weights} loss {val['loss']:.4f} top-1 {100 * val['top1']:.2f}% top-5 {100 * val['top5']:.2f}%"
                if val is not None else "val --")
    if raw is not None:
        val_text += f" | raw weights top-1 {100 * raw['top1']:.2f}%"
    best_text = f"best {100 * state.best['top1']:.2f}% (epoch {state.best['epoch']})" \
        if state.best["top1"] is not None else ""
    log.info(f"epoch {epoch + 1}/{g['epochs']} | train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
             f"{val_text} | lr {format_lr(lr)} | {sums['time']:.1f}s {count / max(sums['time'], 1e-9):.1f} img/s | "
             f"{best_text}{' *' if improved else ''}")


def _write_after_commit(e):
    """The files that follow from a commit of ``latest.pdstate``, each derived from the committed state and the
    weights in memory (which are the committed ones until training goes on), so writing them again gives the same
    bytes: the notebook-format ``latest.pdparams``/``.pdopt``, and at an epoch's end ``best_model`` (when the
    epoch is the best), ``history.json``, the curves and, once all epochs are trained, ``final_model``. Called
    after each commit and on resume (for whichever of them a kill left out); clears ``e.state.pending``."""
    if not e.is_main:
        return
    g, state, out = e.cfg["Global"], e.state, e.run_dir
    ckpt.save_weights(e.model, e.optimizer, os.path.join(out, ckpt.LATEST))
    if state.batch == 0 and state.epoch > 0:
        eval_model = e.ema.module if e.ema is not None else e.model
        if state.best["epoch"] == state.epoch:
            ckpt.save_weights(eval_model, e.optimizer, os.path.join(out, "best_model"))
        state.history.save(os.path.join(out, HISTORY_FILE), extra={"run": g["run_name"], "best": state.best})
        loss_record, acc_record = state.history.records()
        plot_learning_curve(loss_record, "loss", "Loss", "Training steps", os.path.join(out, CURVES[0]))
        plot_learning_curve(acc_record, "acc", "Top-1 accuracy (%)", "Epoch", os.path.join(out, CURVES[1]),
                            percent=True)  # in %, as the log lines
        if state.finished:
            ckpt.save_weights(eval_model, e.optimizer, os.path.join(out, "final_model"))
    e.state.pending = False


def _save_latest(e, epoch, batch, epoch_sums):
    """Commit a resume point (``epoch``/``batch`` is where the resumed run starts), then write the files that
    follow from it (``_write_after_commit``)."""
    state = e.state
    state.epoch, state.batch, state.epoch_sums = epoch, batch, epoch_sums
    if not e.is_main:
        return
    ckpt.save_latest(e.run_dir, e.model, e.optimizer, e.scheduler, state, mixer=e.mixer, ema=e.ema,
                    scaler=e.scaler)
    e.state.last_saved, e.state.pending = (epoch, batch, state.global_step), True
    _write_after_commit(e)


def _dump_rank_digest(e):
    """Test hook (``PPVIT_RANK_DIGEST_DIR``): each rank writes a SHA-256 of its final weights, so a test
    can check that data-parallel ranks ended identical. Off unless the variable is set."""
    folder = os.environ.get("PPVIT_RANK_DIGEST_DIR")
    if not folder:
        return
    h = hashlib.sha256()
    state = e.model.state_dict()  # parameters and buffers (BatchNorm statistics)
    for name, value in sorted(state.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value.numpy()).tobytes())
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, f"rank{e.rank}.json"),
               {"rank": e.rank, "world_size": e.world_size, "sha256": h.hexdigest(), "tensors": len(state),
                "global_step": e.global_step})
