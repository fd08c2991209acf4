// A user's program: cut an image into patches and stitch it back.
#include <qlty/qlty.hpp>

#include <iostream>

int main() {
  qlty::NCYXQuilt quilt(64, 48, {16, 16}, {8, 8}, {2, 2}, 0.1);
  auto x = torch::rand({2, 3, 64, 48});
  auto [back, weights] = quilt.stitch(quilt.unstitch(x));
  const bool ok = torch::allclose(back, x, 1e-5, 1e-5);
  std::cout << "qlty " << QLTY_VERSION << (ok ? ": round trip ok" : ": round trip FAILED") << "\n";
  return ok ? 0 : 1;
}
