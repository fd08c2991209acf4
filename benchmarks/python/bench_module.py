"""The Python module qlty_cpp beside the original qlty, in one process, on the examples of qlty's documentation,
each next to a warm copy of the same bytes (`copy_` into a buffer already written).

    python bench_module.py [--threads 1 2] [--min-seconds 0.5]

Each thread count runs in a child process of its own (numba reads its thread count at import). Prints a Markdown
table: per case the original's time, ours, x_qlty (the original's time over ours), the copy's time and of_copy (ours
over the copy). Times are medians of repeated runs after one untimed run (numba compilation, first touch).
Cases, as qlty's documentation shows them:
  2D quilt   NCYXQuilt(128, 128, window (16, 16), step (4, 4), border (4, 4), 0.1) on (10, 3, 128, 128)
  3D quilt   NCZYXQuilt(64, 64, 64, window 32^3, step 16^3, border 4^3, 0.1) on (5, 1, 64, 64, 64)
  Large loop LargeNCYXQuilt(N=2, 256 x 256, window (64, 64), step (32, 32), border (8, 8)): unstitch_next and stitch
             every window, then return_mean (the documented 1000 x 1024^2 loop, smaller)
  pairs      extract_patch_pairs((10, 3, 128, 128), window (32, 32), 5 pairs, (8, 16), seed 42) and
             extract_overlapping_pixels on them
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(fn, min_seconds):
    fn()
    times = []
    while len(times) < 3 or sum(times) < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(threads, min_seconds):
    import torch

    torch.set_num_threads(threads)
    import qlty
    import qlty_cpp

    torch.manual_seed(0)
    rows = []

    def copy_of(tensor):
        src, dst = tensor.clone(), torch.empty_like(tensor)
        dst.copy_(src)
        return lambda: dst.copy_(src)

    def case(name, ours, theirs, copied):
        rows.append((name, timed(theirs, min_seconds), timed(ours, min_seconds), timed(copy_of(copied), min_seconds)))

    images = torch.randn(10, 3, 128, 128)
    q_ours = qlty_cpp.NCYXQuilt(128, 128, (16, 16), (4, 4), (4, 4), 0.1)
    q_theirs = qlty.NCYXQuilt(128, 128, (16, 16), (4, 4), (4, 4), 0.1)
    patches = q_ours.unstitch(images)
    case("2D quilt unstitch", lambda: q_ours.unstitch(images), lambda: q_theirs.unstitch(images), patches)
    case("2D quilt stitch", lambda: q_ours.stitch(patches), lambda: q_theirs.stitch(patches), patches)

    volume = torch.randn(5, 1, 64, 64, 64)
    v_ours = qlty_cpp.NCZYXQuilt(64, 64, 64, (32, 32, 32), (16, 16, 16), (4, 4, 4), 0.1)
    v_theirs = qlty.NCZYXQuilt(64, 64, 64, (32, 32, 32), (16, 16, 16), (4, 4, 4), 0.1)
    vpatches = v_ours.unstitch(volume)
    case("3D quilt unstitch", lambda: v_ours.unstitch(volume), lambda: v_theirs.unstitch(volume), vpatches)
    case("3D quilt stitch", lambda: v_ours.stitch(vpatches), lambda: v_theirs.stitch(vpatches), vpatches)

    big = torch.randn(2, 1, 256, 256)
    work = tempfile.mkdtemp()

    def large(kind):
        folder = tempfile.mkdtemp(dir=work)
        quilt = kind(os.path.join(folder, "run"), 2, 256, 256, (64, 64), (32, 32), (8, 8), 0.1)
        for _ in range(quilt.N_chunks):
            index, patch = quilt.unstitch_next(big)
            quilt.stitch(patch.unsqueeze(0), index)
        quilt.return_mean()
        if hasattr(quilt, "close"):
            quilt.close()
        shutil.rmtree(folder)

    n_windows = 2 * 7 * 7
    case("Large loop (98 windows + return_mean)", lambda: large(qlty_cpp.LargeNCYXQuilt),
         lambda: large(qlty.LargeNCYXQuilt), torch.randn(n_windows, 1, 64, 64))
    shutil.rmtree(work)

    def pairs(module):
        p1, p2, d, r = module.extract_patch_pairs(images, (32, 32), 5, (8.0, 16.0), random_seed=42)
        module.extract_overlapping_pixels(p1, p2, d, r)

    p1 = qlty_cpp.extract_patch_pairs(images, (32, 32), 5, (8.0, 16.0), random_seed=42)[0]
    case("patch pairs + overlap", lambda: pairs(qlty_cpp), lambda: pairs(qlty), torch.cat([p1, p1]))
    return rows


def ms(seconds):
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        for name, theirs, ours, copy in run(args.child, args.min_seconds):
            print(f"| {name} | {args.child} | {ms(theirs)} | {ms(ours)} | {theirs / ours:.1f} | {ms(copy)} | "
                  f"{ours / copy:.2f} |", flush=True)
        return
    print("| case | threads | original | qlty_cpp | x_qlty | warm copy | of_copy |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   NUMBA_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, __file__, "--child", str(threads), "--min-seconds", str(args.min_seconds)],
                       env=env, check=True)


if __name__ == "__main__":
    main()
