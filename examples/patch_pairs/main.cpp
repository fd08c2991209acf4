// From the Python qlty documentation, the patch-pair example: learn a convolution kernel from the L1 loss between the
// overlapping pixels of displaced patch pairs (self-supervised), then the same pairs in 3D.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  torch::manual_seed(0);
  auto tensor = torch::randn({10, 1, 32, 32});
  auto [patches1, patches2, deltas, rotations] =
      qlty::extract_patch_pairs(tensor, /*window=*/{9, 9}, /*num_patches=*/5, /*delta_range=*/{3.0, 6.0});
  patches1 = patches1.detach();
  patches2 = patches2.detach();
  std::cout << "patches: " << patches1.sizes() << ", deltas: " << deltas.sizes() << "\n";

  auto options = torch::nn::Conv2dOptions(1, 1, 3).padding(1).padding_mode(torch::kReflect).bias(false);
  torch::nn::Conv2d conv1(options), conv2(options);
  torch::optim::Adam optimizer(conv2->parameters(), torch::optim::AdamOptions(0.05));
  double first = 0, last = 0;
  for (int iteration = 0; iteration < 100; ++iteration) {
    optimizer.zero_grad();
    auto [overlapping1, overlapping2] =
        qlty::extract_overlapping_pixels(conv1->forward(patches1), conv2->forward(patches2), deltas, rotations);
    auto loss = torch::l1_loss(overlapping1, overlapping2);
    loss.backward();
    optimizer.step();
    (iteration == 0 ? first : last) = loss.item<double>();
  }
  const double gap = (conv1->weight - conv2->weight).abs().max().item<double>();
  std::cout << "L1 on overlapping pixels: " << first << " -> " << last << ", kernel difference " << gap << "\n";

  auto volume = torch::randn({5, 1, 64, 64, 64});
  auto [v1, v2, d3] = qlty::extract_patch_pairs_3d(volume, {16, 16, 16}, 10, {8.0, 12.0}, /*seed=*/42);
  auto [o1, o2] = qlty::extract_overlapping_pixels_3d(v1, v2, d3);
  std::cout << "3D pairs: " << v1.sizes() << ", overlapping voxels: " << o1.sizes()
            << ", identical: " << (torch::equal(o1, o2) ? "yes" : "no") << "\n";
  return last < first && gap < 0.05 && torch::equal(o1, o2) ? 0 : 1;
}
