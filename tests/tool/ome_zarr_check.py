#!/usr/bin/env python3
"""Opens a `qlty infer --zarr-format 3` output with ome-zarr-py (what napari uses) and validates it with
ome-zarr-models; run by tests/tool/test_cli_shards.cpp with the build folder's virtual environment.

    ome_zarr_check.py OUT_V3 OUT_V2   OUT_V3 is OME-Zarr 0.5 (sharded), OUT_V2 the same run as OME-Zarr 0.4

Checks: ome-zarr-py finds the image (one multiscale level, axes t c z y x) and its argmax label; the data it reads
equals zarr-python's read of OUT_V2/0 and OUT_V2/labels/argmax/0; ome-zarr-models accepts the image and the label
as NGFF 0.5.
"""
import sys

import numpy as np
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel


def main(v3, v2):
    failures = []
    loc = parse_url(v3)
    if loc is None or str(loc.version) != "0.5":
        failures.append(f"ome-zarr-py sees version {getattr(loc, 'version', None)}, expected 0.5")
    nodes = list(Reader(loc)())
    image = [n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs) and not
             any(isinstance(s, Label) for s in n.specs)]
    label = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    if len(image) != 1 or len(label) != 1:
        failures.append(f"expected one image and one label, got {len(image)} and {len(label)}")
    else:
        for node, want_path in ((image[0], "0"), (label[0], "labels/argmax/0")):
            axes = [a["name"] for a in node.metadata["axes"]]
            if axes != ["t", "c", "z", "y", "x"]:
                failures.append(f"{want_path}: axes {axes}")
            if len(node.data) != 1:
                failures.append(f"{want_path}: {len(node.data)} multiscale levels, expected 1")
            got = np.asarray(node.data[0])
            want = zarr.open_array(f"{v2}/{want_path}", mode="r")[...]
            if got.dtype != want.dtype or not np.array_equal(got, want):
                failures.append(f"{want_path}: ome-zarr-py read {got.dtype} {got.shape}, differs from the v2 run")
    try:
        Image.from_zarr(zarr.open_group(v3, mode="r"))
        ImageLabel.from_zarr(zarr.open_group(f"{v3}/labels/argmax", mode="r"))
    except Exception as e:  # a validation error says which field
        failures.append(f"ome-zarr-models: {e}")
    for f in failures:
        print(f)
    print(f"ome-zarr-py: {len(nodes)} nodes, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
