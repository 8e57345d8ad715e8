"""Data loaders that stop, never hang, on a sample that cannot be loaded.

Paddle's ``DataLoader`` reads batches in a thread (``num_workers=0``) or worker processes; an exception raised
there is not passed on reliably (the thread of ``num_workers=0`` dies and the training step waits forever for
its batch). So nothing is raised there: :class:`GuardedSamples` catches every exception of a sample and
:func:`guarded_collate` carries it, as text, in the batch; :class:`SafeLoader` re-raises it in the main
process:

- an image that cannot be read (:class:`~ppvit.data.errors.BadImageError`: damaged, deleted, unreadable) or
  another user mistake: one :class:`DataError` line (the tools print it and exit 2). With
  ``Data.skip_bad_images: true`` the image is skipped instead (logged once, counted in ``SafeLoader.skipped``):
  in training another image takes its place (the next index that reads, so every batch keeps its size and
  every rank its step count); in evaluation it is left out of its batch.
- any other exception (a bug): a ``RuntimeError`` holding the original traceback.

Under ``paddle.distributed.launch`` every rank stops with the same message: training ranks agree after every
batch (one small all-reduce), evaluation ranks (whose shards may differ by a batch) once at the end of the pass.

    loader = SafeLoader(paddle.io.DataLoader(GuardedSamples(dataset, skip=..., replace=True),
                                             batch_sampler=..., collate_fn=guarded_collate), sync="step")

Worker processes that survive a small ``/dev/shm``: Paddle's DataLoader hands batches from its worker processes to
the trainer through shared memory (``use_shared_memory=True``), and a ``/dev/shm`` smaller than the batches in
flight kills the workers (a bus error; AI Studio's containers have 64 MB). ``use_shared_memory`` checks the free
space first and falls back to passing batches through pipes, with one log line.
"""
import json
import logging
import shutil
import traceback

import numpy as np
import paddle

from ..errors import PpvitError
from .errors import BadImageError, DataError

__all__ = ["GuardedSamples", "SafeLoader", "first_readable", "guarded_collate", "safe_loader", "use_shared_memory"]

MESSAGE_BYTES = 8192  # the most of a problem's text shared between ranks


def _bug(err):
    return {"kind": "bug", "message": "".join(traceback.format_exception(type(err), err, err.__traceback__))}


class GuardedSamples(paddle.io.Dataset):
    """``dataset`` whose samples never raise: each is ``(image, label, note)``, where ``note`` is ``""`` or
    the JSON text of a list of problems (``{"kind": "skipped"|"user"|"bug", "message", "path"}``); a sample
    that could not be loaded has ``image`` None.

    ``skip``: an unreadable image (``BadImageError``) is a ``skipped`` problem rather than a ``user`` one;
    ``replace``: a skipped image is replaced by the next index (cyclically) that loads."""

    def __init__(self, dataset, skip=False, replace=False):
        self.dataset, self.skip, self.replace = dataset, bool(skip), bool(replace)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        problems = []
        n = len(self.dataset)
        tries = n if (self.skip and self.replace) else 1
        for k in range(tries):
            try:
                image, label = self.dataset[(int(index) + k) % n]
                return image, label, json.dumps(problems) if problems else ""
            except BadImageError as e:
                problems.append({"kind": "skipped" if self.skip else "user", "message": str(e), "path": e.path})
                if not self.skip:
                    break
            except PpvitError as e:
                problems.append({"kind": "user", "message": str(e)})
                break
            except Exception as e:  # noqa: BLE001 (carried to the main process with its traceback)
                problems.append(_bug(e))
                break
        if tries > 1 and len(problems) == tries:
            problems.append({"kind": "user", "message": f"none of the {n} images of this split can be read"})
        return None, None, json.dumps(problems)


def guarded_collate(samples):
    """``[images (N, ...) float32, labels (N,) int64, notes]`` of ``GuardedSamples`` items: the samples that
    loaded, stacked, and in ``notes`` the JSON text of ``{"problems": [...], "empty": bool}`` (``""`` when
    there is no problem). A batch without any loaded sample holds a one-element placeholder (Paddle's
    loader cannot pass an empty array) and ``"empty": true``. Never raises."""
    problems = [p for _, _, note in samples if note for p in json.loads(note)]
    good = [(image, label) for image, label, _ in samples if image is not None]
    images = labels = None
    try:
        if good:
            images = np.stack([np.asarray(image, dtype=np.float32) for image, _ in good])
            labels = np.stack([np.asarray(label, dtype=np.int64) for _, label in good])
    except ValueError as e:
        shapes = sorted({tuple(np.shape(image)) for image, _ in good})
        problems.append({"kind": "user", "message": f"the images of one batch have different shapes {shapes} "
                                                    f"({e}); give Data.transform a pipeline that resizes them"})
    except Exception as e:  # noqa: BLE001
        problems.append(_bug(e))
    empty = images is None
    if empty:
        images, labels = np.zeros((1,), np.float32), np.zeros((1,), np.int64)
    return [images, labels, json.dumps({"problems": problems, "empty": empty}) if problems or empty else ""]


def _share(problem):
    """Every rank's view of the first problem any rank met (rank order), or None; one all-reduce of a
    ``world_size`` flag vector when there is none. A single process returns ``problem`` itself."""
    from ..engine.distributed import all_reduce_sum, rank, world_size

    n = world_size()
    if n == 1:
        return problem
    flags = np.zeros(n)
    flags[rank()] = problem is not None
    flags = all_reduce_sum(flags)
    if not flags.any():
        return None
    source = int(np.flatnonzero(flags)[0])
    text = np.zeros(MESSAGE_BYTES)
    if rank() == source:
        data = json.dumps(problem).encode("utf-8")
        if len(data) > MESSAGE_BYTES:  # keep the end of a long traceback: it names the failing line
            problem = dict(problem, message="..." + problem["message"][-(MESSAGE_BYTES // 2):])
            data = json.dumps(problem).encode("utf-8")[:MESSAGE_BYTES]
        text[:len(data)] = np.frombuffer(data, np.uint8)
    data = all_reduce_sum(text).astype(np.uint8).tobytes().rstrip(b"\0")
    return json.loads(data.decode("utf-8"))  # the same line on every rank (the launcher shows rank 0's)


def _raise(problem):
    if problem["kind"] == "bug":
        raise RuntimeError("loading a batch failed (a bug, not your data); the loader's traceback:\n"
                           + problem["message"])
    raise DataError(problem["message"])


class SafeLoader:
    """Iterates a ``DataLoader`` over :class:`GuardedSamples` with :func:`guarded_collate`, yielding
    ``(images, labels)`` and raising a sample's problem in the main process (module docstring).

    ``sync``: ``"step"`` (ranks agree after every batch: training, where all ranks take the same number of
    steps) or ``"end"`` (once, after the last batch or the first problem: evaluation shards). ``skipped``:
    ``{path: reason}`` of the images skipped so far (``Data.skip_bad_images``)."""

    def __init__(self, loader, sync="step"):
        if sync not in ("step", "end"):
            raise ValueError(f"sync must be 'step' or 'end', got {sync!r}")
        self.loader, self.sync = loader, sync
        self.batch_sampler = loader.batch_sampler
        self.dataset = getattr(loader, "dataset", None)
        self.use_shared_memory = getattr(loader, "use_shared_memory", None)  # False after a small /dev/shm
        self.skipped = {}

    def __len__(self):
        return len(self.loader)

    def _note(self, notes):
        """Log newly skipped images; return the first problem that stops the run, or None."""
        stop = None
        for problem in json.loads(notes)["problems"] if notes else ():
            if problem["kind"] == "skipped":
                if problem["path"] not in self.skipped:
                    self.skipped[problem["path"]] = problem["message"]
                    logging.getLogger("ppvit").warning(
                        f"skipped an unreadable image (Data.skip_bad_images; {len(self.skipped)} so far): "
                        f"{problem['message']}")
            elif stop is None:
                stop = problem
        return stop

    def __iter__(self):
        batches = iter(self.loader)
        problem = None
        try:
            while True:
                try:
                    images, labels, notes = next(batches)
                except StopIteration:
                    break
                problem = self._note(notes)
                if self.sync == "step":
                    problem = _share(problem)
                if problem is not None:
                    break
                if not (notes and json.loads(notes)["empty"]):
                    yield images, labels
        finally:
            _shutdown(batches)
        if self.sync == "end":
            problem = _share(problem)
        if problem is not None:
            _raise(problem)


def _shutdown(batches):
    """Stop a multi-process iterator's workers now rather than when it is collected."""
    stop = getattr(batches, "_try_shutdown_all", None)
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001 (already stopped)
            pass


def safe_loader(dataset, batch_sampler, num_workers, skip=False, train=False, **kwargs):
    """A :class:`SafeLoader` over ``dataset``: for training (``train``: skipped images replaced, ranks agree
    after every batch) or evaluation (skipped images left out, ranks agree at the end)."""
    loader = paddle.io.DataLoader(GuardedSamples(dataset, skip=skip, replace=train), batch_sampler=batch_sampler,
                                  num_workers=num_workers, collate_fn=guarded_collate, **kwargs)
    return SafeLoader(loader, sync="step" if train else "end")


def first_readable(dataset, n, skip=False):
    """The first ``n`` samples of ``dataset`` (fewer when it is shorter), read in the main process; with
    ``skip`` (``Data.skip_bad_images``) an image that cannot be read (``BadImageError``) is passed over, else
    it is raised. For the few samples a tool reads directly (the input-size check, prediction grids, the
    export's verification images)."""
    out = []
    for i in range(len(dataset)):
        if len(out) >= n:
            break
        try:
            out.append(dataset[i])
        except BadImageError as e:
            if not skip:
                raise
            logging.getLogger("ppvit").warning(f"skipped an unreadable image (Data.skip_bad_images): {e}")
    return out


# ----------------------------------------------------------------------------------------- /dev/shm
SHM_PATH = "/dev/shm"
PREFETCH = 2  # batches each worker keeps ready (Paddle's prefetch_factor)
SAFETY = 2  # headroom over the estimate (labels, allocator granularity, a second loader)


def shm_free_bytes(path=SHM_PATH):
    """Free bytes of the shared-memory filesystem, or 0 when it cannot be read (no /dev/shm)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def batch_bytes(data_cfg):
    """Bytes of one float32 training batch at ``Data.image_size`` (3 channels)."""
    size = int(data_cfg.get("image_size") or 224)
    return int(data_cfg.get("batch_size") or 1) * 3 * size * size * 4


def use_shared_memory(data_cfg, logger=None):
    """Whether the loaders may use shared memory: always with no workers (unused); with ``Data.num_workers``
    workers, when ``/dev/shm`` has room for every worker's prefetched batches (x2). Otherwise False, logged
    once as a warning naming the sizes (batches then travel through pipes: slower, but the workers live)."""
    workers = int(data_cfg.get("num_workers") or 0)
    if workers == 0:
        return True
    need = batch_bytes(data_cfg) * workers * PREFETCH * SAFETY
    free = shm_free_bytes()
    if free >= need:
        return True
    (logger or logging.getLogger("ppvit")).warning(
        f"{SHM_PATH} has {free / 2**20:.0f} MB free, the {workers} loader workers need about {need / 2**20:.0f} MB "
        "of shared memory: passing batches without it (use_shared_memory=False)")
    return False
