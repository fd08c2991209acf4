"""Runs the Python original (qlty from PyPI) on the cases a peer test wrote, for the C++ side to compare.

    original.py DIR    reads DIR/cases.json, a list of {"op", "name", "args"}; inputs are DIR/<name>.<input>.npy,
                       outputs go to DIR/<name>.<output>.npy (bool as uint8). Prints the original's version.
"""

import json
import pathlib
import sys

import numpy as np
import torch

import qlty
from qlty.pretokenizer_2d import build_sequence_pair, tokenize_patch


def load(d, name, key):
    return torch.from_numpy(np.load(d / f"{name}.{key}.npy"))


def save(d, name, key, t):
    a = t.detach().cpu().contiguous().numpy()
    np.save(d / f"{name}.{key}.npy", a.astype(np.uint8) if a.dtype == np.bool_ else a)


def tokenize(d, name, args):
    tokens, coords = tokenize_patch(load(d, name, "patch"), args["patch_size"], args.get("stride"))
    save(d, name, "tokens", tokens)
    save(d, name, "origins", coords)


def sequence_pair(d, name, args):
    p1, p2 = load(d, name, "patch1"), load(d, name, "patch2")
    if p1.dim() == 4:
        dx, dy, k = load(d, name, "dx"), load(d, name, "dy"), load(d, name, "rot_k90")
    else:
        dx, dy, k = args["dx"], args["dy"], args["rot_k90"]
    out = build_sequence_pair(p1, p2, dx, dy, k, args["patch_size"], args.get("stride"))
    for key, value in out.items():
        save(d, name, key, value)


def stack_to_ome_zarr(d, name, args):
    import zarr
    from qlty.utils.stack_to_zarr import stack_files_to_ome_zarr

    out = stack_files_to_ome_zarr(args["folder"], args["extension"], args["pattern"], output_dir=str(d / name),
                                  pyramid_levels=args["levels"], num_workers=1, verbose=False)
    (stack,) = out.values()
    group = zarr.open_group(stack["zarr_path"], mode="r")
    for level in range(args["levels"]):
        np.save(d / f"{name}.level{level}.npy", group[str(level)][...])


def convert_25d(d, name, args):
    from qlty.qlty2_5D import NCZYX25DQuilt

    spec = {op: (groups if op != "identity" else [g[0] for g in groups]) for op, groups in args["spec"]}
    q = NCZYX25DQuilt(load(d, name, "volume"), spec, boundary_mode=args["boundary"],
                      accumulation_mode=args["accumulation"], z_slices=args.get("z_slices"))
    save(d, name, "out", q.convert())
    save(d, name, "order", torch.tensor([[m["input_channel"], len(m["offsets"])] for m in q.get_channel_metadata()]))


OPS = {"tokenize_patch": tokenize, "convert_25d": convert_25d, "build_sequence_pair": sequence_pair, "stack_to_ome_zarr": stack_to_ome_zarr}


def main():
    d = pathlib.Path(sys.argv[1])
    for case in json.loads((d / "cases.json").read_text()):
        OPS[case["op"]](d, case["name"], case["args"])
    print(qlty.__version__ if hasattr(qlty, "__version__") else "qlty")


if __name__ == "__main__":
    main()
