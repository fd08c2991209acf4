#!/usr/bin/env python3
"""zarr-python 2.13 side of qlty's Zarr interoperability tests (run by tests/test_zarr.cpp).

    zarr_interop.py write DIR   writes arrays with every dtype x compressor x separator (and big-endian and
                                Fortran-order ones), each with one chunk missing, and DIR/manifest.json
    zarr_interop.py check DIR   opens the arrays qlty wrote (listed in DIR/manifest.json), compares every value,
                                and compares each .zarray with the one zarr-python writes for the same settings

Values follow one formula on both sides: v(i) = (7 i + 3) mod 97 over the flat index i, then per kind: bool
v mod 5 < 2, unsigned v, signed v - 40, float (v - 40) / 4. The chunk at grid index (1, 1, 1) is missing and
reads as the fill value.
"""
import json
import os
import sys
import tempfile

import numcodecs
import numpy as np
import zarr

SHAPE, CHUNKS, MISSING = (7, 11, 13), (3, 4, 5), (1, 1, 1)
DTYPES = ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"]
FILLS = {"|b1": True, "|i1": -7, "<i2": -7, "<i4": None, "<i8": -7, "|u1": 200, "<u2": 65535,
         "<u4": 4294967295, "<u8": 12345678901234, "<f2": 1.5, "<f4": float("nan"), "<f8": float("-inf")}
COMPRESSORS = [None,
               {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
               {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0},
               {"id": "blosc", "cname": "blosclz", "clevel": 9, "shuffle": 0, "blocksize": 0},
               {"id": "blosc", "cname": "lz4hc", "clevel": 1, "shuffle": -1, "blocksize": 0},
               {"id": "blosc", "cname": "zlib", "clevel": 5, "shuffle": 1, "blocksize": 256},
               {"id": "zlib", "level": 1}, {"id": "gzip", "level": 5}, {"id": "zstd", "level": 3},
               {"id": "lz4", "acceleration": 1}]


def expected(dtype, fill):
    dt = np.dtype(dtype)
    v = (np.arange(int(np.prod(SHAPE)), dtype=np.int64) * 7 + 3) % 97
    if dt.kind == "b":
        a = v % 5 < 2
    elif dt.kind == "u":
        a = v
    elif dt.kind == "i":
        a = v - 40
    else:
        a = (v - 40) / 4.0
    a = a.astype(dt).reshape(SHAPE)
    sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(MISSING, CHUNKS, SHAPE))
    a[sl] = 0 if fill is None else fill
    return a


def same(a, b):
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def write(root):
    os.makedirs(root, exist_ok=True)
    manifest = []

    def one(name, dtype, comp, sep, order="C"):
        fill = FILLS[dtype.replace(">", "<")]
        path = os.path.join(root, name)
        store = zarr.DirectoryStore(path, dimension_separator=sep)
        z = zarr.open(store, mode="w", shape=SHAPE, chunks=CHUNKS, dtype=dtype, order=order, fill_value=fill,
                      compressor=numcodecs.get_codec(dict(comp)) if comp else None)
        z[...] = expected(dtype, fill)
        os.remove(os.path.join(path, sep.join(str(i) for i in MISSING)))
        manifest.append({"name": name, "dtype": dtype, "compressor": comp, "separator": sep, "order": order})

    for d in DTYPES:
        for k, comp in enumerate(COMPRESSORS):
            for sep in ".", "/":
                one(f"{d[1:]}_c{k}_{'flat' if sep == '.' else 'nested'}", d, comp, sep)
        if d[0] == "<":
            one(f"{d[1:]}_big", ">" + d[1:], COMPRESSORS[1], ".")
        one(f"{d[1:]}_fortran", d, COMPRESSORS[8], ".", order="F")
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    print(f"wrote {len(manifest)} arrays")


def check(root):
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    failures = []
    for m in manifest:
        path = os.path.join(root, m["name"])
        z = zarr.open(zarr.DirectoryStore(path, dimension_separator=m["separator"]), mode="r")
        fill = z.fill_value
        want = expected(m["dtype"], None if fill is None else fill)
        got = z[...]
        if fill is None:  # zarr-python leaves a missing chunk uninitialised when there is no fill value
            sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(MISSING, CHUNKS, SHAPE))
            got[sl] = want[sl]
        if got.dtype != np.dtype(m["dtype"]) or not same(got, want):
            failures.append(f"{m['name']}: values differ")
        if z.nchunks_initialized != z.nchunks - 1:
            failures.append(f"{m['name']}: {z.nchunks_initialized} chunks stored, expected {z.nchunks - 1}")
        if m["compressor"] != (z.compressor.get_config() if z.compressor else None):
            failures.append(f"{m['name']}: compressor {z.compressor} != {m['compressor']}")
        # The .zarray zarr-python writes for the same settings, byte for byte.
        with tempfile.TemporaryDirectory() as tmp:
            ref = zarr.open(zarr.DirectoryStore(tmp, dimension_separator=m["separator"]), mode="w", shape=z.shape,
                            chunks=z.chunks, dtype=z.dtype, fill_value=fill, order="C",
                            compressor=numcodecs.get_codec(dict(m["compressor"])) if m["compressor"] else None)
            with open(os.path.join(tmp, ".zarray"), "rb") as f:
                ref_meta = f.read()
        with open(os.path.join(path, ".zarray"), "rb") as f:
            our_meta = f.read()
        if our_meta != ref_meta:
            failures.append(f"{m['name']}: .zarray differs:\n{our_meta.decode()}\nzarr-python:\n{ref_meta.decode()}")
        if "attributes" in m and dict(z.attrs) != m["attributes"]:
            failures.append(f"{m['name']}: attributes {dict(z.attrs)} != {m['attributes']}")
    for f in failures:
        print(f)
    print(f"checked {len(manifest)} arrays, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2]))
