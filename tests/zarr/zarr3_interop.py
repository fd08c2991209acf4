#!/usr/bin/env python3
"""zarr-python 3 side of qlty's Zarr interoperability tests for integer types at their range edges (run by
tests/test_zarr.cpp with the build folder's virtual environment, scripts/python-env.sh).

    zarr3_interop.py write DIR [UINT64_MAX]   writes v2 and v3 arrays of every integer type, and DIR/manifest.json
    zarr3_interop.py check DIR                checks the arrays qlty wrote (listed in DIR/manifest.json)

Values over the flat index i: lo, lo + 1, hi - 1, hi for i < 4 (the type's range; UINT64_MAX lowers uint64's hi
where the reader cannot hold 2^64 - 1), then (7 i + 3) mod 97. The manifest lists name, dtype, lo, hi and format.
"""
import json
import os
import sys

import numpy as np
import zarr

SHAPE, CHUNKS = (5, 6), (2, 4)
DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def expected(dtype, lo, hi):
    v = [(7 * i + 3) % 97 for i in range(SHAPE[0] * SHAPE[1])]
    v[:4] = [lo, lo + 1, hi - 1, hi]
    return np.array(v, dtype=dtype).reshape(SHAPE)


def write(root, uint64_max):
    os.makedirs(root, exist_ok=True)
    manifest = []
    for fmt in 2, 3:
        for d in DTYPES:
            info = np.iinfo(d)
            lo, hi = int(info.min), int(info.max) if d != "uint64" else uint64_max
            name = f"{d}_v{fmt}"
            z = zarr.create_array(store=os.path.join(root, name), shape=SHAPE, chunks=CHUNKS, dtype=d, zarr_format=fmt,
                                  fill_value=0)
            z[...] = expected(d, lo, hi)
            manifest.append({"name": name, "dtype": d, "lo": lo, "hi": hi, "zarr_format": fmt})
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    print(f"zarr {zarr.__version__}: wrote {len(manifest)} arrays")


def check(root):
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    failures = []
    for m in manifest:
        z = zarr.open_array(os.path.join(root, m["name"]), mode="r")
        got, want = z[...], expected(m["dtype"], m["lo"], m["hi"])
        if z.metadata.zarr_format != m["zarr_format"]:
            failures.append(f"{m['name']}: zarr_format {z.metadata.zarr_format}, expected {m['zarr_format']}")
        if got.dtype != want.dtype or not np.array_equal(got, want):
            failures.append(f"{m['name']}: {got.dtype} {got.ravel()[:4]} != {want.dtype} {want.ravel()[:4]}")
    for f in failures:
        print(f)
    print(f"zarr {zarr.__version__}: checked {len(manifest)} arrays, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "write":
        sys.exit(write(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 2**64 - 1))
    sys.exit(check(sys.argv[2]))
