// From the Python qlty documentation, the sparse-label example: patches whose labels are all missing inside the border
// are dropped.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  using torch::indexing::Slice;
  qlty::NCYXQuilt quilt(128, 128, /*window=*/{32, 32}, /*step=*/{16, 16}, /*border=*/{5, 5}, /*border_weight=*/0.1);

  auto input_data = torch::randn({10, 3, 128, 128});
  auto labels = torch::full({10, 128, 128}, -1.0);                   // missing label = -1
  labels.index_put_({Slice(), Slice(20, 64), Slice(20, 108)}, 1.0);  // some valid data

  auto [input_patches, label_patches] = quilt.unstitch_data_pair(input_data, labels, /*missing_label=*/-1);
  auto border_tensor = quilt.border_tensor();
  auto [valid_input, valid_labels, removed] = qlty::weed_sparse_classification_training_pairs_2D(
      input_patches, label_patches, /*missing_label=*/-1, border_tensor);

  std::cout << "Original patches: " << input_patches.size(0) << "\n";
  std::cout << "Valid patches: " << valid_input.size(0) << "\n";
  std::cout << "Border mask: " << border_tensor.sizes()
            << ", valid pixels per patch: " << border_tensor.sum().item<float>() << "\n";
  // Windows start every 16 pixels; their inner rows [s + 5, s + 27) meet the labelled rows [20, 64) for s <= 48.
  return input_patches.size(0) == 490 && valid_input.size(0) == 10 * 4 * 7 ? 0 : 1;
}
