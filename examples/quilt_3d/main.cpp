// From the Python qlty documentation, the 3D example: patches of volumes, a model on the patches, and the volume
// stitched back.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  torch::manual_seed(0);
  qlty::NCZYXQuilt quilt(64, 64, 64, /*window=*/{32, 32, 32}, /*step=*/{16, 16, 16}, /*border=*/{4, 4, 4},
                         /*border_weight=*/0.1);
  auto volume = torch::randn({5, 1, 64, 64, 64});  // (N, C, Z, Y, X)
  auto patches = quilt.unstitch(volume);
  std::cout << "patches: " << patches.sizes() << "\n";

  auto model = torch::nn::Conv3d(torch::nn::Conv3dOptions(1, 2, 3).padding(1));
  torch::NoGradGuard no_grad;
  auto processed = model->forward(patches);
  auto [reconstructed, weights] = quilt.stitch(processed);
  std::cout << "reconstructed: " << reconstructed.sizes() << ", weights: " << weights.sizes() << "\n";

  // The model sees zero padding at patch edges. With border >= the model's radius (here 1) and border weight 0
  // (clamped to 1e-8), only exact pixels count wherever a window's interior covers them: the tiled model equals
  // the model on the whole volume there.
  qlty::NCZYXQuilt exact(64, 64, 64, 32, 16, 4, /*border_weight=*/0.0);
  auto [tiled, w0] = exact.stitch(model->forward(exact.unstitch(volume)));
  auto whole = model->forward(volume);
  using torch::indexing::Slice;
  auto inner = [](const torch::Tensor& t) {
    return t.index({Slice(), Slice(), Slice(4, 60), Slice(4, 60), Slice(4, 60)});
  };
  const double err = (inner(tiled) - inner(whole)).abs().max().item<double>();
  const double err_bw = (inner(reconstructed) - inner(whole)).abs().max().item<double>();
  std::cout << "tiled vs whole-volume model, interior max difference: " << err << " (border weight 0), " << err_bw
            << " (border weight 0.1)\n";
  return reconstructed.size(1) == 2 && err < 1e-4 ? 0 : 1;
}
