"""Images/s of Paddle dygraph vs the exported model under Paddle Inference (oneDNN on CPU).

    python benchmarks/bench_predictor.py                      # the notebook models at their notebook sizes
    python benchmarks/bench_predictor.py -m conv2former_n_cifar -b 32 -n 20
    python benchmarks/bench_predictor.py --size 32            # every model at 32x32 (quick)

Both paths get the same random batch in eval mode, timed batch by batch in alternation (so a load change
on a shared machine hits both alike) after warm-up runs; the table also shows the largest difference of
their logits.
"""
import argparse
import os
import tempfile
import time

# Paddle's CPU kernels use one thread unless OMP_NUM_THREADS is set before paddle is imported.
if not os.environ.get("OMP_NUM_THREADS"):
    try:
        os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import ppvit  # noqa: E402
from ppvit.deploy import Predictor, export_model  # noqa: E402

# the models the notebooks train (each at its cfg's input size, which is its notebook's)
NOTEBOOK_MODELS = ["conv2former_n_cifar", "convit_small", "dilateformer_t", "coatnet_0", "convmixer_256_8"]


def build(name, size):
    model = ppvit.create_model(name, num_classes=10, img_size=size)
    model.eval()
    return model


def bench(name, size, batch_size, iters, warmup, threads, folder):
    model = build(name, size)
    prefix = os.path.join(folder, name)
    export_model(model, prefix, size, {"model": name}, onnx=False)
    pred = Predictor(prefix, device="cpu", threads=threads, batch_size=batch_size)
    x = np.random.rand(batch_size, 3, size, size).astype("float32")
    xt = paddle.to_tensor(x)
    with paddle.no_grad():
        for _ in range(warmup):
            ref = model(xt).numpy()
            out = pred(x)
        t_dy = t_pr = 0.0
        for _ in range(iters):
            t0 = time.perf_counter()
            ref = model(xt).numpy()
            t1 = time.perf_counter()
            out = pred(x)
            t2 = time.perf_counter()
            t_dy += t1 - t0
            t_pr += t2 - t1
    n = batch_size * iters
    return {"model": name, "size": size, "dygraph": n / t_dy, "predictor": n / t_pr, "speedup": t_dy / t_pr,
            "max_abs": float(np.abs(out - ref).max()), "onednn": pred.onednn}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--models", nargs="+", default=list(NOTEBOOK_MODELS),
                   help="registered model names (default: the notebook models)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("-n", "--iters", type=int, default=10, help="timed batches per path")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", type=int, default=None, help="input size for every model (default: the notebook's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the predictor (default: OMP_NUM_THREADS)")
    args = p.parse_args(argv)
    for name in args.models:
        if not ppvit.models.is_model(name):
            p.error(ppvit.models.registry.unknown_model_message(name))

    paddle.set_device("cpu")
    paddle.seed(0)
    np.random.seed(0)
    print(f"paddle {paddle.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"batch {args.batch_size}, {args.iters} timed batches after {args.warmup} warm-up", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            size = args.size or ppvit.get_model_cfg(name).input_size[1]
            rows.append(bench(name, size, args.batch_size, args.iters, args.warmup, args.threads, folder))
            r = rows[-1]
            print(f"  {name}: dygraph {r['dygraph']:.1f} img/s, predictor {r['predictor']:.1f} img/s", flush=True)

    header = f"{'model':<22}{'input':>8}{'dygraph img/s':>15}{'predictor img/s':>17}{'speed-up':>10}" \
             f"{'max |diff|':>12}  oneDNN"
    # oneDNN "no": the program holds an op whose oneDNN kernel is broken in this Paddle (see predictor.py)
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        size = f"{r['size']}x{r['size']}"
        print(f"{r['model']:<22}{size:>8}{r['dygraph']:>15.1f}{r['predictor']:>17.1f}"
              f"{r['speedup']:>9.1f}x{r['max_abs']:>12.1e}  {'yes' if r['onednn'] else 'no'}")


if __name__ == "__main__":
    main()
