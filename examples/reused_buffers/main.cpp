// Loops that reuse their buffers: the `_out` calls write patches, stitched results and patch pairs into tensors
// allocated once, so a batch costs the copy and nothing more (no fresh pages from the OS, no zeroing). They record
// no autograd graph: use them where the data needs no gradient (inputs, targets, inference), and the allocating
// calls where a gradient must flow through the quilt.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  torch::manual_seed(0);
  qlty::NCYXQuilt quilt(128, 128, /*window=*/32, /*step=*/16, /*border=*/4, /*border_weight=*/0.1);
  const int64_t N = 4, P = quilt.patches_per_image();

  // Training: patches of inputs and targets into buffers allocated once; the gradient flows through the network.
  auto net = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 1, 3).padding(1));
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(0.01));
  auto x_patches = torch::empty({N * P, 3, 32, 32}), y_patches = torch::empty({N * P, 1, 32, 32});
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    auto x = torch::rand({N, 3, 128, 128});
    auto y = x.mean(1, /*keepdim=*/true);  // the network should learn the channel mean
    quilt.unstitch_out(x, x_patches);
    quilt.unstitch_out(y, y_patches);
    optimizer.zero_grad();
    auto loss = torch::mse_loss(net->forward(x_patches), y_patches);
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  std::cout << "training loss " << first << " -> " << last << "\n";

  // Inference: predictions stitched into a result and weights allocated once.
  torch::NoGradGuard no_grad;
  auto result = torch::empty({N, 1, 128, 128}), weights = torch::empty({128, 128});
  double mismatch = 0;
  for (int batch = 0; batch < 3; ++batch) {
    auto x = torch::rand({N, 3, 128, 128});
    quilt.unstitch_out(x, x_patches);
    auto prediction = net->forward(x_patches);
    quilt.stitch_out(prediction, result, weights);
    mismatch += (result - std::get<0>(quilt.stitch(prediction))).abs().max().item<double>();
  }
  std::cout << "stitched " << result.sizes() << ", difference to the allocating call: " << mismatch << "\n";

  // Self-supervised pairs: patches into reused buffers, the overlap into tensors that grow once.
  auto images = torch::randn({8, 1, 64, 64});
  auto p1 = torch::empty({8 * 16, 1, 16, 16}), p2 = torch::empty({8 * 16, 1, 16, 16});
  auto o1 = torch::empty({0, 1}), o2 = torch::empty({0, 1});
  bool same = true;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    auto [deltas, rotations] = qlty::extract_patch_pairs_out(images, {16, 16}, 16, {4.0, 12.0}, p1, p2, seed);
    qlty::extract_overlapping_pixels_out(p1, p2, deltas, rotations, o1, o2);
    same = same && torch::equal(o1, o2);
  }
  std::cout << "pairs " << p1.sizes() << ", overlapping pixels " << o1.sizes() << ", identical: " << same << "\n";
  return last < first && mismatch == 0 && same ? 0 : 1;
}
