#include "model.hpp"

#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>

#include <CLI/CLI.hpp>

namespace qlty::tool {

/// A model file's identity for the manifest: its name, size and CRC32C.
std::string file_id(const std::string& path) {
  auto bytes = qlty::detail::read_file(path, uint64_t(1) << 40, "model file");
  if (!bytes) throw qlty::Error("model", path + ": no such file");
  return "file:" + qlty::detail::base_name(path) + ":" + std::to_string(bytes->size()) + ":" +
         qlty::detail::hex32(qlty::detail::crc32c(bytes->data(), bytes->size()));
}

void load_model(const std::string& file, int D, const torch::Device& device, LoadedModel& m, torch::ScalarType dtype,
                const std::string& key) {
  if (!file.empty()) {
    m.id = file_id(file) + (key.empty() ? "" : ":output " + key);  // another head is another model
    m.file = qlty::Model::load(file, device, key);
    if (dtype != torch::kFloat && !device.is_cuda()) m.file->to(dtype);  // CUDA runs under autocast instead
    m.fn = *m.file;
  } else {
    if (!key.empty())
      throw CLI::ValidationError("--output-key", "\"" + key +
                                                     "\" picks an entry of a model's dict output; the built-in "
                                                     "network (no --model) returns one tensor");
    m.id = qlty::tool::kBuiltinModelId;
    m.builtin = BuiltinNet(D);
    m.builtin->to(device);
    if (dtype != torch::kFloat && !device.is_cuda()) m.builtin->to(dtype);
    m.builtin->eval();
    m.fn = [&m](const torch::Tensor& x) { return m.builtin->forward(x); };
  }
}

}  // namespace qlty::tool
