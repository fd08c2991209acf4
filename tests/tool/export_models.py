"""One small 3D network, exported the two ways docs/usage.md shows, for the `qlty infer` model tests.

    python export_models.py OUT_DIR

writes to OUT_DIR:
  net.pt            TorchScript (torch.jit.script + torch.jit.save)
  net_fixed3.pt2    AOTInductor package with a fixed batch of 3 windows of 16^3
  net_dyn.pt2       AOTInductor package with a dynamic batch (torch.export.Dim), windows of 16^3
  vol.npy           the input volume (1, 1, 40, 40, 40), float32
  whole.f32         the network applied to the whole volume at once (1, 2, 40, 40, 40), raw float32
"""
import os
import sys

import numpy as np
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv3d(4, 2, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    net = Net().eval()
    vol = torch.rand(1, 1, 40, 40, 40)
    with torch.no_grad():
        whole = net(vol)
    np.save(os.path.join(out, "vol.npy"), vol.numpy())
    whole.numpy().astype("<f4").tofile(os.path.join(out, "whole.f32"))
    torch.jit.save(torch.jit.script(net), os.path.join(out, "net.pt"))

    # The batch is the only dynamic dimension of net_dyn.pt2 (torch.export keeps the others as in the example).
    example = (torch.rand(3, 1, 16, 16, 16),)
    fixed = torch.export.export(net, example)
    torch._inductor.aoti_compile_and_package(fixed, package_path=os.path.join(out, "net_fixed3.pt2"))
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = torch.export.export(net, example, dynamic_shapes={"x": {0: batch}})
    torch._inductor.aoti_compile_and_package(dynamic, package_path=os.path.join(out, "net_dyn.pt2"))


if __name__ == "__main__":
    main(sys.argv[1])
