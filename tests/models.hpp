#pragma once
// TorchScript models for the tests, defined and saved in C++ (no Python): what a user's exported model looks like.

#include <torch/script.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace qlty_test {

/// tanh of a 3x3(x3) convolution from C to Cout channels with fixed random weights, saved to `file` and loaded back.
inline torch::jit::Module conv_model(int D, int64_t C, int64_t Cout, const std::string& file) {
  torch::manual_seed(11);
  std::vector<int64_t> wshape{Cout, C};
  for (int a = 0; a < D; ++a) wshape.push_back(3);
  torch::jit::Module m("ConvNet");
  m.register_parameter("weight", torch::randn(wshape) * 0.3, false);
  m.register_parameter("bias", torch::randn({Cout}) * 0.1, false);
  m.define(D == 2 ? R"(
def forward(self, x):
    return torch.tanh(torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1]))
)"
                  : R"(
def forward(self, x):
    return torch.tanh(torch.conv3d(x, self.weight, self.bias, [1, 1, 1], [1, 1, 1]))
)");
  m.save(file);
  return torch::jit::load(file);
}

/// A TorchScript model with the given body of `forward(self, x)` (one expression or statements), saved to `file`.
inline void script_model(const std::string& body, const std::string& file) {
  torch::jit::Module m("Custom");
  m.define("def forward(self, x):\n" + body + "\n");
  m.save(file);
}

}  // namespace qlty_test
