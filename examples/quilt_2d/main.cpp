// From the Python qlty documentation, the 2D example: cut a training pair into overlapping patches, stitch
// network-sized outputs back, and the inference pattern with softmax applied after stitching.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  torch::manual_seed(0);
  auto x = torch::rand({10, 3, 128, 128});  // input images (N, C, Y, X)
  auto y = torch::rand({10, 1, 128, 128});  // target labels (N, C, Y, X)

  // 16x16 windows every 4 pixels; a 4-pixel border weighs 0.1 when stitching.
  qlty::NCYXQuilt quilt(128, 128, /*window=*/{16, 16}, /*step=*/{4, 4}, /*border=*/{4, 4}, /*border_weight=*/0.1);

  auto [x_bits, y_bits] = quilt.unstitch_data_pair(x, y);
  std::cout << "x shape: " << x.sizes() << "\ny shape: " << y.sizes() << "\nx_bits shape: " << x_bits.sizes()
            << "\ny_bits shape: " << y_bits.sizes() << "\n";

  // Mock network output with 17 channels, stitched back: overlapping areas averaged, borders down-weighted.
  auto y_mock = torch::rand({8410, 17, 16, 16});
  auto [y_stitched, weights] = quilt.stitch(y_mock);
  std::cout << "stitched: " << y_stitched.sizes() << ", weights: " << weights.sizes() << "\n";

  auto [nY, nX] = quilt.get_times();
  std::cout << "patches per image: " << nY << " x " << nX << " = " << nY * nX << "\n";

  // Inference: logits per patch, stitched, then softmax over channels (never average softmaxed patches).
  auto net = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1));
  torch::NoGradGuard no_grad;
  auto patches = quilt.unstitch(x);
  auto [logits, w] = quilt.stitch(net->forward(patches));
  auto probabilities = torch::softmax(logits, 1);
  const double err = (probabilities.sum(1) - 1).abs().max().item<double>();
  std::cout << "class probabilities: " << probabilities.sizes() << ", max |sum - 1| = " << err << "\n";

  // The stitched identity gives the input back.
  auto [back, w2] = quilt.stitch(patches);
  const double round_trip = (back - x).abs().max().item<double>();
  std::cout << "round trip max error: " << round_trip << "\n";
  return x_bits.size(0) == 8410 && y_stitched.size(1) == 17 && round_trip < 1e-5 && err < 1e-5 ? 0 : 1;
}
