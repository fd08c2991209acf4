#!/usr/bin/env python3
"""Opens a `qlty convert` pyramid with ome-zarr-py (what napari uses) and validates it with ome-zarr-models; run by
tests/tool/test_cli_pyramid.cpp with the build folder's virtual environment.

    ome_zarr_pyramid_check.py PATH LEVELS AXES     e.g. out.zarr 3 zyx

Checks: ome-zarr-py finds one image with LEVELS levels and those axes, reads each level as zarr-python reads
PATH/<level>; ome-zarr-models accepts the group as an NGFF image of its version (0.4 or 0.5).
"""
import sys

import numpy as np
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader


def main(path, levels, axes):
    failures = []
    loc = parse_url(path)
    version = str(getattr(loc, "version", None))
    nodes = [n for n in Reader(loc)() if any(isinstance(s, Multiscales) for s in n.specs)] if loc else []
    if len(nodes) != 1:
        failures.append(f"expected one image, ome-zarr-py found {len(nodes)}")
    else:
        node = nodes[0]
        got_axes = "".join(a["name"] for a in node.metadata["axes"])
        if got_axes != axes:
            failures.append(f"axes {got_axes}, expected {axes}")
        if len(node.data) != levels:
            failures.append(f"{len(node.data)} levels, expected {levels}")
        for level, data in enumerate(node.data):
            want = zarr.open_array(f"{path}/{level}", mode="r")[...]
            if not np.array_equal(np.asarray(data), want):
                failures.append(f"level {level}: ome-zarr-py's read differs from zarr-python's")
    try:
        if version == "0.5":
            from ome_zarr_models.v05.image import Image
        else:
            from ome_zarr_models.v04.image import Image
        Image.from_zarr(zarr.open_group(path, mode="r"))
    except Exception as e:  # a validation error says which field
        failures.append(f"ome-zarr-models ({version}): {e}")
    for f in failures:
        print(f)
    print(f"ome-zarr-py: version {version}, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
