#pragma once
// The model of `qlty infer`: a TorchScript file, an AOTInductor package (qlty::Model) or the built-in network, and
// its identity in the output's manifest.

#include <qlty/blockwise.hpp>
#include <qlty/model.hpp>

#include "../builtin.hpp"

#include <torch/torch.h>

#include <optional>
#include <string>

namespace qlty::tool {

/// A model ready to run on `device`: a TorchScript file, an AOTInductor package or the built-in network.
struct LoadedModel {
  std::optional<qlty::Model> file;
  BuiltinNet builtin{nullptr};
  std::string id;
  qlty::BlockModel fn;
};

/// Loads `file` (or the built-in network of D dimensions when empty) onto `device`, in `dtype` on the CPU, with
/// `key` picking an entry of a dict output.
void load_model(const std::string& file, int D, const torch::Device& device, LoadedModel& m,
                torch::ScalarType dtype = torch::kFloat, const std::string& key = "");

/// A model file's identity for the manifest: its name, size and CRC32C.
std::string file_id(const std::string& path);

}  // namespace qlty::tool
