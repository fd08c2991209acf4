"""The examples of the original qlty's usage page (docs/usage.md mirrors it), run as written there with only the
import changed (`import qlty_cpp as qlty`, `from qlty_cpp import ...`), checking the shapes the page prints and the
values they imply. The disk-cached example runs on 4 images instead of 100 (the same code; 100 x 3 x 512^2 would make
CI write gigabytes)."""

import os
import tempfile

import torch
import torch.nn as nn

import qlty_cpp as qlty
from qlty_cpp import LargeNCYXQuilt, NCYXQuilt, NCZYXQuilt  # noqa: F401  (the page's imports)
from qlty_cpp import extract_overlapping_pixels, extract_patch_pairs, weed_sparse_classification_training_pairs_2D


def test_basic_2d_example():
    x = torch.rand((10, 3, 128, 128))  # Input images: (N, C, Y, X)
    y = torch.rand((10, 1, 128, 128))  # Target labels: (N, C, Y, X)
    quilt = qlty.NCYXQuilt(Y=128, X=128, window=(16, 16), step=(4, 4), border=(4, 4), border_weight=0.1)
    x_bits, y_bits = quilt.unstitch_data_pair(x, y)
    assert x_bits.shape == torch.Size([8410, 3, 16, 16])
    assert y_bits.shape == torch.Size([8410, 1, 16, 16])  # the page prints [8410, 16, 16]: see docs/python.md
    y_mock = torch.rand((8410, 17, 16, 16))
    y_stitched, weights = quilt.stitch(y_mock)
    assert y_stitched.shape == torch.Size([10, 17, 128, 128])
    result, weights = quilt.stitch(x_bits, use_numba=True)  # Default
    result2, weights2 = quilt.stitch(x_bits, use_numba=False)  # Pure PyTorch
    assert torch.equal(result, result2) and torch.allclose(result, x, atol=1e-5)
    nY, nX = quilt.get_times()
    assert (nY, nX) == (29, 29) and x_bits.shape[0] == 10 * nY * nX


def test_3d_example():
    quilt = NCZYXQuilt(Z=64, Y=64, X=64, window=(32, 32, 32), step=(16, 16, 16), border=(4, 4, 4), border_weight=0.1)
    volume = torch.randn(5, 1, 64, 64, 64)  # (N, C, Z, Y, X)
    patches = quilt.unstitch(volume)
    processed = patches * 2  # your_model(patches)
    reconstructed, weights = quilt.stitch(processed)
    assert patches.shape == (5 * 27, 1, 32, 32, 32) and torch.allclose(reconstructed, volume * 2, atol=1e-5)


def test_large_dataset_example():
    temp_dir = tempfile.mkdtemp()
    filename = os.path.join(temp_dir, "my_dataset")
    quilt = LargeNCYXQuilt(filename=filename, N=4, Y=512, X=512, window=(128, 128), step=(64, 64), border=(10, 10),
                           border_weight=0.1)
    data = torch.randn(4, 3, 512, 512)
    for i in range(quilt.N_chunks):
        index, patch = quilt.unstitch_next(data)
        processed = patch.unsqueeze(0) + 1  # your_model(patch.unsqueeze(0))
        quilt.stitch(processed, index)
    mean_result = quilt.return_mean()
    mean_with_std = quilt.return_mean(std=True)
    assert mean_result.shape == (4, 3, 512, 512)
    assert abs(mean_result - (data.numpy() + 1)).max() < 1e-4
    assert abs(mean_with_std[1]).max() < 1e-2  # the windows agree: the spread is float32 rounding's square root
    assert os.path.isdir(filename + "_mean.zarr") and os.path.isdir(filename + "_std.zarr")


def test_missing_data_example():
    quilt = NCYXQuilt(Y=128, X=128, window=(32, 32), step=(16, 16), border=(5, 5), border_weight=0.1)
    input_data = torch.randn(10, 3, 128, 128)
    labels = torch.ones(10, 128, 128) * (-1)  # Missing label = -1
    labels[:, 20:108, 20:108] = 1.0  # Some valid data
    input_patches, label_patches = quilt.unstitch_data_pair(input_data, labels, missing_label=-1)
    border_tensor = quilt.border_tensor()
    valid_input, valid_labels, mask = weed_sparse_classification_training_pairs_2D(
        input_patches, label_patches, missing_label=-1, border_tensor=border_tensor)
    assert input_patches.shape[0] == 490
    # every window's inside (5 pixels from its edges) meets the labelled square [20, 108)^2: all are kept
    assert valid_input.shape[0] == 490 and not mask.any()
    far = labels.clone()
    far[:, :, :] = -1
    far[:, 0:3, 0:3] = 1  # labels only in the first window's border
    _, far_patches = quilt.unstitch_data_pair(input_data, far, missing_label=-1)
    kept, _, dropped = weed_sparse_classification_training_pairs_2D(input_patches, far_patches, -1, border_tensor)
    assert kept.shape[0] == 0 and dropped.all()
    border_mask = quilt.border_tensor()
    assert border_mask.shape == (32, 32) and int(border_mask.sum()) == 22 * 22


def test_patch_pair_examples():
    tensor = torch.randn(10, 3, 128, 128)
    window = (32, 32)
    num_patches = 5
    delta_range = (8.0, 16.0)
    patches1, patches2, deltas, rotations = extract_patch_pairs(tensor, window, num_patches, delta_range,
                                                                random_seed=42)
    assert patches1.shape == (50, 3, 32, 32) and patches2.shape == (50, 3, 32, 32)
    assert deltas.shape == (50, 2) and rotations.shape == (50,) and not rotations.any()
    overlapping1, overlapping2 = extract_overlapping_pixels(patches1, patches2, deltas, rotations=rotations)
    assert overlapping1.shape[1] == 3 and torch.equal(overlapping1, overlapping2)  # the same image pixels


def test_kernel_optimization_example():
    torch.manual_seed(0)
    tensor = torch.randn(10, 1, 32, 32)
    patches1, patches2, deltas, rotations = extract_patch_pairs(tensor, window=(9, 9), num_patches=5,
                                                                delta_range=(3.0, 6.0))
    patches1 = patches1.detach()
    patches2 = patches2.detach()
    conv1 = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=False)
    conv2 = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=False)
    optimizer = torch.optim.Adam(conv2.parameters(), lr=0.05)
    losses = []
    for iteration in range(100):
        optimizer.zero_grad()
        output1 = conv1(patches1)
        output2 = conv2(patches2)
        overlapping1, overlapping2 = extract_overlapping_pixels(output1, output2, deltas, rotations=rotations)
        loss = torch.nn.functional.l1_loss(overlapping1, overlapping2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
