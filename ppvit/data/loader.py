"""Worker processes that survive a small ``/dev/shm``: Paddle's DataLoader hands batches from its worker
processes to the trainer through shared memory (``use_shared_memory=True``), and a ``/dev/shm`` smaller than
the batches in flight kills the workers (a bus error; AI Studio's containers have 64 MB). ``use_shared_memory``
checks the free space first and falls back to passing batches through pipes, with one log line."""
import logging
import shutil

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
