// Link test, second translation unit.
#include <qlty/model.hpp>
#include <qlty/qlty.hpp>

torch::Tensor stitch_in_b(const torch::Tensor& patches) {
  qlty::NCYXQuilt q(8, 8, 4, 2, 1, 0.1);
  auto [x, w] = q.stitch(patches);
  auto t = qlty::weed_sparse_classification_training_pairs_2D(patches, patches, -1, q.border_tensor());
  return std::get<0>(t).numel() == patches.numel() ? x : torch::Tensor();
}
