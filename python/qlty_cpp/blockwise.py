"""infer_blockwise: a model over every window of an image or volume too large for memory, written to OME-Zarr."""

from __future__ import annotations

import os

from . import _C


def infer_blockwise(model, input, output, *, progress=None, output_key: str = "", **options) -> dict:
    """Runs `model` over every window of `input` and writes the blended result to the OME-Zarr group `output`,
    block by block; rerunning the same call after a crash resumes (a run with other settings is refused).

    model: a callable taking windows (B, C, *window) float32 and returning (B, C', *window) (a torch.nn.Module, run
        under torch.no_grad), or the path of a TorchScript (.pt) or AOTInductor (.pt2) file (output_key picks a
        TorchScript model's dict entry).
    input: a tensor (N, C, [Z,] Y, X), a qlty_cpp.ZarrArray or the path of a Zarr array (read block by block).
    output: the folder of the OME-Zarr output (OUT/0 the mean; OUT/std, OUT/labels/argmax/0 when asked for).
    progress: called with a dict (blocks_total, blocks_done, windows_planned, windows_done, seconds) after every
        batch and block.
    options: window (64), step (48), border (0), border_weight (0.1), blend ("border", "constant", "gaussian",
        "custom"), sigma_scale, custom_window, pad ("none", "constant", "reflect", "replicate"), pad_value,
        tta_flip, tta_axes, precision ("float32", "float16", "bfloat16"), activation ("none", "sigmoid",
        "softmax"), slicewise, output_dtype ("float32", "float16", "uint8"), batch_size (8), device ("cpu",
        "cuda", ...), chunks, block, block_bytes, write_mean, write_std, write_argmax, compression ("blosc",
        "zstd", "gzip", "none"), zarr_format (2: OME-Zarr 0.4, 3: 0.5), shards, model_id, overwrite, durable,
        prefetch, max_blocks, part ((i, K): part i of K).
    Returns a dict: blocks_total, blocks_skipped, blocks_computed, windows_grid, windows_computed, model_seconds,
    out_channels, block, chunks, seconds, complete.
    """
    for key in ("window", "step", "border", "sigma_scale"):
        if isinstance(options.get(key), int):
            options[key] = [options[key]]
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(input, os.PathLike):
        input = os.fspath(input)
    return _C.infer_blockwise(model, input, os.fspath(output), progress=progress, output_key=output_key, **options)


def blockwise_status(output) -> dict:
    """blocks_total, blocks_done and the manifest (the run's settings) of a blockwise output."""
    return _C.blockwise_status(os.fspath(output))
