#!/usr/bin/env python3
"""zarr-python 3 side of qlty's tests of sharded Zarr v3 arrays (run by tests/zarr/test_zarr_shards.cpp with the
build folder's virtual environment, scripts/python-env.sh).

    zarr3_shards.py write DIR   writes sharded arrays over the codec matrix, and DIR/manifest.json
    zarr3_shards.py check DIR   checks the sharded arrays qlty wrote (listed in DIR/manifest.json); TensorStore
                                reads them too where it is installed

Every array has shape (37, 50), shards (16, 20) and inner chunks (8, 10): edge shards are partial, and inner
chunks beyond the array's edge are empty. Values over the flat index i: (7 i + 3) mod 97 - 40, as the dtype; the
rows [8, 16) are left unwritten, so the inner chunks there are empty and read as the fill value (5).
"""
import json
import os
import sys

import numpy as np
import zarr
import zarr.codecs as zc

SHAPE, SHARDS, INNER = (37, 50), (16, 20), (8, 10)
FILL = 5
CODECS = {
    "raw": [],
    "blosc": [zc.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    "zstd": [zc.ZstdCodec(level=3)],
    "gzip": [zc.GzipCodec(level=5)],
    "crc32c": [zc.Crc32cCodec()],
    "zstd_crc32c": [zc.ZstdCodec(level=1), zc.Crc32cCodec()],
}


def expected(dtype):
    v = ((np.arange(SHAPE[0] * SHAPE[1]) * 7 + 3) % 97 - 40).reshape(SHAPE)
    v[8:16, :] = FILL
    return v.astype(dtype)


def cases():
    for name in CODECS:
        for where in ("end", "start"):
            for dtype in ("float32", "int16"):
                yield f"{name}_{where}_{dtype}", name, where, dtype


def write(root):
    os.makedirs(root, exist_ok=True)
    manifest = []
    for label, codec, where, dtype in cases():
        z = zarr.create_array(store=os.path.join(root, label), shape=SHAPE, chunks=INNER,
                              shards={"shape": SHARDS, "index_location": where}, dtype=dtype,
                              compressors=CODECS[codec], fill_value=FILL, zarr_format=3)
        values = expected(dtype)
        z[0:8, :] = values[0:8]
        z[16:, :] = values[16:]
        manifest.append({"name": label, "dtype": dtype, "codec": codec, "index_location": where})
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    print(f"zarr {zarr.__version__}: wrote {len(manifest)} sharded arrays")


def check(root):
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    failures = []
    try:
        import tensorstore as ts
    except ImportError:
        ts = None
    for m in manifest:
        path = os.path.join(root, m["name"])
        z = zarr.open_array(path, mode="r")
        want = expected(m["dtype"])
        if z.shards != SHARDS or z.chunks != INNER:
            failures.append(f"{m['name']}: shards {z.shards}, chunks {z.chunks}")
        got = z[...]
        if got.dtype != want.dtype or not np.array_equal(got, want):
            failures.append(f"{m['name']}: zarr-python read differs")
        part = z[3:30, 7:41]  # a region read: only some inner chunks
        if not np.array_equal(part, want[3:30, 7:41]):
            failures.append(f"{m['name']}: zarr-python region read differs")
        if ts is not None:
            t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}).result()
            if not np.array_equal(t.read().result(), want):
                failures.append(f"{m['name']}: tensorstore read differs")
    for f in failures:
        print(f)
    readers = "zarr-python" + (" and tensorstore" if ts is not None else "")
    print(f"zarr {zarr.__version__}: {readers} checked {len(manifest)} sharded arrays, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2]))
