"""The Python original (PyPI `qlty`) on the C++ benchmarks' workloads, so that they time it side by side.

    python peer.py CASE THREADS [--min-runs 3] [--min-seconds 1]

prints one JSON line: {"case", "threads", "qlty", "seconds" (the median of the timed runs: at least min-runs, and
more until they add up to min-seconds), "runs"}. The benchmarks
(benchmarks/copy_reference.hpp, `qlty_bench::peer_seconds`) run this in a child process, on the inputs they use
themselves (same shapes and seeds), after one untimed run that pays numba's compilation and first-touch costs.

Cases (see the header comments of bench_quilt.cpp, bench_patch_pairs.cpp and bench_large_quilt.cpp):
  W1/unstitch W1/stitch W2/unstitch W2/stitch W3/unstitch W3/stitch   NCYXQuilt / NCZYXQuilt, default options
  W5/pairs_and_overlap big/pairs_and_overlap                          extract_patch_pairs + extract_overlapping_pixels
  W4/large                                                            LargeNCYXQuilt: stitch every patch, return_mean
  T1/sequence_pair                                                    build_sequence_pair on a batch of pairs
  Q1/convert_25d                                                      NCZYX25DQuilt.convert (bench_quilt.cpp)
  P1/pyramid                                                          stack_files_to_ome_zarr: 64 TIFF slices, 4 levels
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("threads", type=int)
    ap.add_argument("--min-runs", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=1.0, help="timed runs go on until they add up to this")
    return ap.parse_args()


ARGS = parse()
# Every pool the original uses gets the benchmark's thread count: torch, OpenMP, numba (read at import), dask.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import dask  # noqa: E402
import qlty  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
dask.config.set(scheduler="threads", num_workers=ARGS.threads)

QUILTS = {  # name: x shape, window, step, border, stitch channels (bench_quilt.cpp)
    "W1": ((10, 3, 128, 128), 16, 4, 4, 17),
    "W2": ((4, 1, 1024, 1024), 128, 64, 16, 8),
    "W3": ((2, 1, 128, 128, 128), 64, 32, 8, 2),
}
PAIRS = {"W5": ((10, 3, 128, 128), 64), "big": ((64, 1, 512, 512), 256)}  # x shape, pairs per image
SEQUENCES = {"T1": ((128, 3, 64, 64), 8, 4, 24)}  # patch batch shape, token size, stride, largest shift


def quilt_case(name, op):
    shape, window, step, border, channels = QUILTS[name]
    spatial = shape[2:]
    d = len(spatial)
    cls = qlty.NCYXQuilt if d == 2 else qlty.NCZYXQuilt
    q = cls(*spatial, window=(window,) * d, step=(step,) * d, border=(border,) * d, border_weight=0.1)
    x = torch.rand(shape)
    if op == "unstitch":
        return lambda: q.unstitch(x)
    patches = torch.rand((q.unstitch(x[:, :1]).shape[0], channels) + (window,) * d)
    return lambda: q.stitch(patches)


def pairs_case(name):
    shape, pairs = PAIRS[name]
    x = torch.rand(shape)
    seed = iter(range(1 << 30))

    def run():
        p1, p2, deltas, rotations = qlty.extract_patch_pairs(x, (32, 32), pairs, (8.0, 16.0), random_seed=next(seed))
        return qlty.extract_overlapping_pixels(p1, p2, deltas, rotations)

    return run


def sequence_case(name):
    from qlty.pretokenizer_2d import build_sequence_pair

    shape, size, stride, shift = SEQUENCES[name]
    torch.manual_seed(0)
    p1, p2 = torch.rand(shape), torch.rand(shape)
    n = shape[0]
    dx = torch.randint(-shift, shift + 1, (n,)).float()
    dy = torch.randint(-shift, shift + 1, (n,)).float()
    k = torch.randint(0, 4, (n,))
    return lambda: build_sequence_pair(p1, p2, dx, dy, k, size, stride)


def quilt25d_case():
    from qlty.qlty2_5D import NCZYX25DQuilt

    torch.manual_seed(0)
    spec = {"identity": [-1, 0, 1], "mean": [[-3, -2], [2, 3]], "std": [[-2, -1, 0, 1, 2]]}
    q = NCZYX25DQuilt(torch.rand(2, 1, 32, 256, 256), spec, boundary_mode="clamp", accumulation_mode="2d")
    return q.convert


def pyramid_case():
    # bench_pyramid.cpp P1: 64 float32 TIFF slices of 512 x 512 (a smooth field plus noise), 4 levels; a fresh output
    # per run (removed untimed), workers as threads.
    import numpy as np
    import tifffile
    from qlty.utils.stack_to_zarr import stack_files_to_ome_zarr

    root = tempfile.mkdtemp(prefix="qlty_peer_pyramid_")
    src = os.path.join(root, "in")
    os.makedirs(src)
    rng = np.random.default_rng(0)
    y = np.linspace(0, 6.28, 512)[:, None]
    x = np.linspace(0, 6.28, 512)[None, :]
    for z in range(64):
        s = np.round(np.sin(y * (1 + z / 32.0)) * np.cos(x) * 1000 + 3 * rng.standard_normal((512, 512)))
        tifffile.imwrite(os.path.join(src, f"slice_{z}.tif"), s.astype(np.float32))
    out = os.path.join(root, "out")

    def run():
        stack_files_to_ome_zarr(src, ".tif", r"(.+)_(\d+)\.tif$", output_dir=out, pyramid_levels=4,
                                num_workers=ARGS.threads, verbose=False)

    run.before = lambda: shutil.rmtree(out, ignore_errors=True)
    run.cleanup = lambda: shutil.rmtree(root, ignore_errors=True)
    return run


def large_case():
    # bench_large_quilt.cpp W4: N=4, 2 channels, 512x512, window 128, step 64, border 10, weight 0.1; every patch
    # stitched once in index order, then return_mean; a fresh file prefix per run.
    n, c, s, w, step, border = 4, 2, 512, 128, 64, 10
    probe = qlty.NCYXQuilt(s, s, window=(w, w), step=(step, step), border=(border, border), border_weight=0.1)
    torch.manual_seed(0)
    count = n * probe.unstitch(torch.zeros(1, 1, s, s)).shape[0]
    patches = torch.randn(count, c, w, w)
    root = tempfile.mkdtemp(prefix="qlty_peer_")
    runs = iter(range(1 << 30))

    def run():
        prefix = os.path.join(root, f"w4_{next(runs)}")
        q = qlty.LargeNCYXQuilt(prefix, n, s, s, window=(w, w), step=(step, step), border=(border, border),
                                border_weight=0.1)
        for i in range(q.N_chunks):
            q.stitch(patches[i : i + 1], i)
        return q.return_mean()

    def remove_files():  # untimed, as in the C++ benchmark
        for f in os.listdir(root):
            shutil.rmtree(os.path.join(root, f), ignore_errors=True)

    run.before = remove_files
    run.cleanup = lambda: shutil.rmtree(root, ignore_errors=True)
    return run


def make(case):
    name, _, op = case.partition("/")
    if name in QUILTS and op in ("unstitch", "stitch"):
        return quilt_case(name, op)
    if name in PAIRS and op == "pairs_and_overlap":
        return pairs_case(name)
    if name in SEQUENCES and op == "sequence_pair":
        return sequence_case(name)
    if case == "Q1/convert_25d":
        return quilt25d_case()
    if case == "P1/pyramid":
        return pyramid_case()
    if case == "W4/large":
        return large_case()
    sys.exit(f"peer.py: unknown case {case!r}; see the usage")


def main():
    run = make(ARGS.case)
    before = getattr(run, "before", lambda: None)
    run()  # numba's compilation, first-touch pages
    times = []
    while len(times) < ARGS.min_runs or sum(times) < ARGS.min_seconds:
        before()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    getattr(run, "cleanup", lambda: None)()
    print(json.dumps({"case": ARGS.case, "threads": ARGS.threads, "qlty": qlty.__version__,
                      "seconds": statistics.median(times), "runs": times}))


if __name__ == "__main__":
    main()
