// Link test, first translation unit: every header included here and in b.cpp.
#include <qlty/model.hpp>
#include <qlty/qlty.hpp>

#include <iostream>

torch::Tensor stitch_in_b(const torch::Tensor& patches);

int main() {
  qlty::NCYXQuilt q(8, 8, 4, 2, 1, 0.1);
  auto x = torch::arange(64, torch::kFloat32).view({1, 1, 8, 8});
  auto back = stitch_in_b(q.unstitch(x));
  const bool ok = torch::allclose(back, x, 1e-5, 1e-5);
  std::cout << (ok ? "link test: round trip across translation units ok" : "link test: wrong values") << "\n";
  return ok ? 0 : 1;
}
