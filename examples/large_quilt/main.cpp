// Disk-cached stitching of a volume that is read from a Zarr array, one window at a time, with a resumable run:
// the first pass stops halfway (as if the job hit its time limit), the second picks up what is missing.
#include <qlty/qlty.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>

int main() {
  const std::string dir = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + std::string("/qlty_example_large");
  qlty::detail::remove_tree(dir);

  // The input: a (1, 1, 64, 96, 96) volume stored as a Zarr array (it could be far larger than memory).
  auto z = torch::linspace(0, 3.14, 64).view({1, 1, -1, 1, 1});
  auto y = torch::linspace(0, 3.14, 96).view({1, 1, 1, -1, 1});
  auto x = torch::linspace(0, 3.14, 96).view({1, 1, 1, 1, -1});
  const auto volume = (z.sin() * y.cos() * x.sin()).contiguous();
  qlty::zarr::ArrayOptions opts({1, 1, 64, 96, 96}, {1, 1, 32, 32, 32});
  auto input = qlty::zarr::Array::create(dir + "/input.zarr", opts);
  input.write({0, 0, 0, 0, 0}, volume);

  // A stand-in for a network: two output channels, a smoothing and the square.
  auto model = [](const torch::Tensor& p) {
    auto s = torch::avg_pool3d(p.unsqueeze(0), 3, 1, 1).squeeze(0);
    return torch::cat({s, p * p}, 0);
  };

  qlty::LargeQuiltOptions o;
  o.cache_bytes = 4 << 20;  // small on purpose: chunks move between memory and disk
  const std::string prefix = dir + "/pred";
  {
    qlty::LargeNCZYXQuilt quilt(prefix, 1, 64, 96, 96, 32, 16, 4, 0.1, o);
    for (int64_t i = 0; i < quilt.N_chunks() / 2; ++i) {
      auto [index, patch] = quilt.unstitch_next(input);
      quilt.stitch(model(patch), index);
    }
    std::cout << "first run: stitched " << quilt.N_chunks() / 2 << " of " << quilt.N_chunks() << " windows, stopped\n";
  }  // the quilt checkpoints when it goes out of scope; a kill -9 would keep the last periodic checkpoint
  qlty::LargeNCZYXQuilt quilt(prefix, 1, 64, 96, 96, 32, 16, 4, 0.1, o);
  const auto missing = quilt.missing_indices();
  std::cout << "second run: " << missing.size() << " windows missing\n";
  for (int64_t i : missing) quilt.stitch(model(quilt.unstitch(input, i)), i);
  auto [mean, sd] = quilt.return_mean(/*std=*/true);

  // The same windows through the in-memory quilt.
  qlty::NCZYXQuilt memory(64, 96, 96, 32, 16, 4, 0.1);
  auto patches = memory.unstitch(volume);
  std::vector<torch::Tensor> outs;
  for (int64_t i = 0; i < patches.size(0); ++i) outs.push_back(model(patches[i]));
  auto [ref, w] = memory.stitch(torch::stack(outs));
  const double diff = (mean - ref).abs().max().item<double>();
  std::cout << "mean " << mean.sizes() << " written to " << prefix << "_mean.zarr, std to " << prefix
            << "_std.zarr\nlargest difference from the in-memory quilt: " << diff << "\n";
  qlty::detail::remove_tree(dir);
  return diff < 1e-5 ? 0 : 1;
}
