// A separate process for the Zarr concurrency and crash tests (tests/test_zarr.cpp starts it).
//   zarr_worker add PATH N            adds 1 to the box [0,5)x[0,5) (four chunks, partly) N times
//   zarr_worker rows PATH K P         writes row block r (one inner chunk high) with value r for every r = K mod P
//   zarr_worker rewrite PATH          rewrites the whole array with 1, 2, 3, ... until killed
#include <qlty/zarr.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 2 ? argv[1] : "";
    if (mode == "add" && argc == 4) {
      auto a = qlty::zarr::Array::open(argv[2]);
      const int n = std::atoi(argv[3]);
      for (int i = 0; i < n; ++i) a.add({0, 0}, torch::ones({5, 5}, torch::kInt));
      return 0;
    }
    if (mode == "rows" && argc == 5) {
      auto a = qlty::zarr::Array::open(argv[2]);
      const int64_t k = std::atoll(argv[3]), p = std::atoll(argv[4]);
      const int64_t ch = a.inner_chunks()[0], rows = a.shape()[0], cols = a.shape()[1];
      for (int64_t r = k; r * ch < rows; r += p)
        a.write({r * ch, 0}, torch::full({std::min(ch, rows - r * ch), cols}, static_cast<int>(r), torch::kInt));
      return 0;
    }
    if (mode == "rewrite" && argc == 3) {
      auto a = qlty::zarr::Array::open(argv[2]);
      const auto shape = a.shape();
      for (int v = 1;; ++v) a.write(std::vector<int64_t>(shape.size(), 0), torch::full(shape, v, torch::kInt));
    }
    std::cerr << "usage: zarr_worker add PATH N | rows PATH K P | rewrite PATH\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
