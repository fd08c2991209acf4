"""qlty_cpp's own behaviour: errors as Python exceptions, the GIL released, resumable disk-cached quilts, the
extensions (blends, padding, _out calls) and infer_blockwise over a torch.nn.Module."""

import threading

import numpy as np
import pytest
import torch

import qlty_cpp


def test_bad_arguments_raise_value_and_type_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="step along Y must be >= 1, got 0") as e:
        qlty_cpp.NCYXQuilt(64, 64, (16, 16), (0, 8))
    assert e.value.field == "step"
    with pytest.raises(ValueError, match="border_weight must be in"):
        qlty_cpp.NCYXQuilt(64, 64, (16, 16), (8, 8), 2, border_weight=1.5)
    with pytest.raises(TypeError, match="border must be int, tuple, or None"):
        qlty_cpp.NCYXQuilt(64, 64, (16, 16), (8, 8), border="2")
    with pytest.raises(ValueError, match="blend must be") as e:
        qlty_cpp.NCYXQuilt(64, 64, (16, 16), (8, 8), blend="cosine")
    assert e.value.field == "blend"
    quilt = qlty_cpp.NCYXQuilt(64, 64, (16, 16), (8, 8))
    with pytest.raises(ValueError, match=r"x must be .*got"):
        quilt.unstitch(torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="multiple of the 49 windows"):
        quilt.stitch(torch.zeros(7, 1, 16, 16))
    with pytest.raises(ValueError, match="position_mode"):
        quilt.unstitch(torch.zeros(1, 1, 64, 64), add_positional_channels=True, position_mode="polar")


def test_file_errors_are_qlty_errors_with_their_tag(tmp_path):
    with pytest.raises(qlty_cpp.QltyError) as e:
        qlty_cpp.ZarrArray(str(tmp_path / "nothing.zarr"))
    assert e.value.tag == "zarr.missing" and "nothing.zarr" in str(e.value)
    first = qlty_cpp.LargeNCYXQuilt(str(tmp_path / "run"), 1, 32, 32, (16, 16), (8, 8))
    with pytest.raises(qlty_cpp.QltyIOError) as e:  # one quilt at a time on a prefix
        qlty_cpp.LargeNCYXQuilt(str(tmp_path / "run"), 1, 32, 32, (16, 16), (8, 8))
    assert e.value.tag == "lock" and isinstance(e.value, OSError)
    first.close()
    with pytest.raises(qlty_cpp.QltyError) as e:  # other settings on an existing prefix
        qlty_cpp.LargeNCYXQuilt(str(tmp_path / "run"), 1, 32, 32, (16, 16), (4, 4))
    assert e.value.tag == "checkpoint" and '"step":[4,4]' in str(e.value) and e.value.mismatches == []
    with pytest.raises(ValueError, match="closed"):
        first.unstitch(torch.zeros(1, 1, 32, 32), 0)


def test_long_calls_release_the_gil():
    quilt = qlty_cpp.NCZYXQuilt(96, 96, 96, (32, 32, 32), (4, 4, 4))
    x = torch.randn(1, 1, 96, 96, 96)
    done = threading.Event()

    def work():
        quilt.stitch(quilt.unstitch(x))
        done.set()

    ticks = 0
    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1  # runs only while the worker's C++ call does not hold the GIL
    worker.join()
    assert ticks > 1000


def test_large_quilt_resumes_after_an_interruption(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 48, 40)
    args = (2, 48, 40, (16, 16), (8, 12), (2, 2), 0.3)
    with qlty_cpp.LargeNCYXQuilt(str(tmp_path / "whole"), *args) as whole:
        for i in whole.stitch_order():
            whole.stitch(whole.unstitch(x, i) * 2, i)
        want = whole.return_mean()
    first = qlty_cpp.LargeNCYXQuilt(str(tmp_path / "part"), *args)
    order = first.stitch_order()
    for i in order[: len(order) // 2]:
        first.stitch(first.unstitch(x, i) * 2, i)
    first.checkpoint()
    del first  # a process that stops here leaves the checkpoint
    second = qlty_cpp.LargeNCYXQuilt(str(tmp_path / "part"), *args)
    missing = set(second.missing_indices())
    assert missing == set(order[len(order) // 2:])
    todo = [i for i in order if i in missing]
    second.stitch(torch.stack([second.unstitch(x, i) * 2 for i in todo]), todo)  # batched
    got = second.return_mean()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, 2 * x.numpy(), rtol=1e-5, atol=1e-5)
    zarr_mean = qlty_cpp.ZarrArray(str(tmp_path / "part_mean.zarr")).read_all()
    np.testing.assert_array_equal(zarr_mean.numpy(), got)
    second.close()
    # windows of a Zarr input given by its path are its windows
    with qlty_cpp.LargeNCYXQuilt(str(tmp_path / "from_zarr"), *args) as third:
        path = str(tmp_path / "part_mean.zarr")
        for i in (0, third.N_chunks - 1):
            assert torch.equal(third.unstitch(path, i), third.unstitch(zarr_mean, i))


def test_extensions_blends_padding_and_out_calls():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 40, 50)
    for blend in ("constant", "gaussian"):
        quilt = qlty_cpp.NCYXQuilt(40, 50, (16, 16), (8, 8), blend=blend)
        result, weights = quilt.stitch(quilt.unstitch(x))
        assert torch.allclose(result, x, atol=1e-5)
        assert weights.min() > 0
    gauss = qlty_cpp.NCYXQuilt(40, 50, (16, 16), (8, 8), blend="gaussian", sigma_scale=0.25)
    centre = gauss.weight[7:9, 7:9]
    assert torch.allclose(centre, torch.full_like(centre, centre.max())) and gauss.weight[0, 0] < 0.2
    custom = torch.rand(16, 16) + 0.1
    quilt = qlty_cpp.NCYXQuilt(40, 50, (16, 16), (8, 8), blend="custom", custom_window=custom)
    assert torch.allclose(quilt.weight, custom / custom.max())
    small = torch.randn(1, 1, 10, 12)
    padded = qlty_cpp.NCYXQuilt(10, 12, (16, 16), (8, 8), pad="reflect")
    result, _ = padded.stitch(padded.unstitch(small))
    assert result.shape == small.shape and torch.allclose(result, small, atol=1e-6)
    quilt = qlty_cpp.NCYXQuilt(40, 50, (16, 16), (8, 8), 2, 0.1)
    patches = torch.empty_like(quilt.unstitch(x))
    assert quilt.unstitch_out(x, patches) is patches and torch.equal(patches, quilt.unstitch(x))
    result, weights = torch.empty_like(x), torch.empty(40, 50)
    quilt.stitch_out(patches, result, weights)
    want, want_w = quilt.stitch(patches)
    assert torch.equal(result, want) and torch.equal(weights, want_w)


def test_large_quilt_positions_match_the_in_memory_quilt(tmp_path):
    for shape, pad in (((40, 30), "none"), ((10, 12), "constant")):
        memory = qlty_cpp.NCYXQuilt(*shape, (16, 16), (8, 8), pad=pad)
        want = memory.unstitch(torch.zeros(2, 1, *shape), return_positions=True, include_n_position=True)[1]
        with qlty_cpp.LargeNCYXQuilt(str(tmp_path / pad), 2, *shape, (16, 16), (8, 8), pad=pad) as large:
            x = torch.randn(2, 1, *shape)
            got = [large.unstitch(x, i, return_positions=True, include_n_position=True)[1] for i in range(large.N_chunks)]
            assert torch.equal(torch.stack(got), want), pad
    assert want[0].tolist() == [0, -3, -2]  # the padding before a 10 x 12 image in a 16 x 16 window


def test_quilts_show_their_settings(tmp_path):
    assert repr(qlty_cpp.NCYXQuilt(64, 48, (16, 16), (8, 8), 2)) == (
        "NCYXQuilt(Y=64, X=48, window=(16, 16), step=(8, 8), border=(2, 2), border_weight=1.0)")
    with qlty_cpp.LargeNCZYXQuilt(str(tmp_path / "p"), 2, 8, 8, 8, (4, 4, 4), (2, 2, 2)) as large:
        assert repr(large) == (f"LargeNCZYXQuilt(filename={str(tmp_path / 'p')!r}, N=2, Z=8, Y=8, X=8, "
                               "window=(4, 4, 4), step=(2, 2, 2), border=None, border_weight=0.1)")


def test_unstitch_and_stitch_backpropagate():
    x = torch.randn(1, 2, 32, 32, requires_grad=True)
    quilt = qlty_cpp.NCYXQuilt(32, 32, (16, 16), (8, 8), (2, 2), 0.5)
    result, _ = quilt.stitch(quilt.unstitch(x) * 3)
    (grad,) = torch.autograd.grad(result.sum(), x)
    assert torch.allclose(grad, torch.full_like(x, 3.0), atol=1e-5)


def test_infer_blockwise_with_a_module_equals_the_module_on_the_whole(tmp_path):
    torch.manual_seed(2)
    net = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 96, 80)
    seen = []
    summary = qlty_cpp.infer_blockwise(net, x, tmp_path / "out.zarr", window=32, step=24, blend="constant",
                                       batch_size=4, progress=seen.append)
    assert summary["complete"] and summary["out_channels"] == 3 and seen[-1]["blocks_done"] == seen[-1]["blocks_total"]
    got = qlty_cpp.ZarrArray(str(tmp_path / "out.zarr" / "0")).read_all()
    stitched = qlty_cpp.NCYXQuilt(96, 80, (32, 32), (24, 24), blend="constant")
    with torch.no_grad():
        want, _ = stitched.stitch(net(stitched.unstitch(x)))
    assert torch.allclose(got, want, atol=1e-5)
    again = qlty_cpp.infer_blockwise(net, x, str(tmp_path / "out.zarr"), window=32, step=24, blend="constant",
                                     batch_size=4)
    assert again["blocks_computed"] == 0 and again["blocks_skipped"] == summary["blocks_total"]  # resumed: done
    with pytest.raises(ValueError, match="unknown option"):
        qlty_cpp.infer_blockwise(net, x, str(tmp_path / "o2.zarr"), windw=32)

    def broken(batch):
        raise KeyError("the model failed")

    with pytest.raises(Exception, match="the model failed"):
        qlty_cpp.infer_blockwise(broken, x, str(tmp_path / "o3.zarr"), window=32, step=24)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_ctrl_c_stops_infer_blockwise_and_a_rerun_resumes(tmp_path):
    import os
    import signal

    torch.manual_seed(3)
    x = torch.randn(1, 1, 2048, 2048)
    model = str(tmp_path / "conv.pt")
    torch.jit.script(torch.nn.Conv2d(1, 1, 3, padding=1)).save(model)  # no Python runs during the inference
    output = str(tmp_path / "out.zarr")
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):  # between two batches, not at the end of the run
        qlty_cpp.infer_blockwise(model, x, output, window=32, step=16)
    timer.join()
    summary = qlty_cpp.infer_blockwise(model, x, output, window=32, step=16)
    assert summary["complete"]

    def interrupted(batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # as itself, not as a model error
        qlty_cpp.infer_blockwise(interrupted, x, str(tmp_path / "o2.zarr"), window=32, step=16)
