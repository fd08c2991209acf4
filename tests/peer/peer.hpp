#pragma once
// Runs the Python original (qlty from PyPI, in the build folder's virtual environment) on inputs the C++ side
// writes, and reads its outputs back: tests/peer/original.py does the Python half. A test adds cases, runs them
// once, and compares.
#include "../common.hpp"

#include <nlohmann/json.hpp>

#include "formats/npy.hpp"

#include <cstdlib>
#include <map>
#include <string>

namespace qlty_peer {

class Original {
 public:
  /// @brief A case: op (a function of original.py), a unique name, JSON arguments and input tensors (CPU).
  void add(const std::string& op, const std::string& name, nlohmann::json args,
           const std::map<std::string, torch::Tensor>& inputs = {}) {
    for (const auto& [key, t] : inputs) qlty::tool::write_npy(dir_ / (name + "." + key + ".npy"), t.contiguous());
    cases_.push_back({{"op", op}, {"name", name}, {"args", std::move(args)}});
  }

  /// @brief Runs every case in one Python process; false (with the script's output in log()) when it fails.
  bool run() {
    qlty_test::write_text(dir_ / "cases.json", cases_.dump());
    const std::string cmd =
        std::string(QLTY_PEER_PYTHON) + " " + QLTY_PEER_SCRIPT + " " + dir_.path + " > " + dir_ / "log.txt" + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(dir_ / "log.txt");
    log_.assign(std::istreambuf_iterator<char>(in), {});
    return rc == 0;
  }
  const std::string& log() const { return log_; }

  /// @brief Output `key` of case `name` (bool outputs come back as uint8).
  torch::Tensor output(const std::string& name, const std::string& key) const {
    return qlty::tool::NpyFile(dir_ / (name + "." + key + ".npy")).read_all();
  }

 private:
  qlty_test::TempDir dir_{"qlty_peer"};
  nlohmann::json cases_ = nlohmann::json::array();
  std::string log_;
};

}  // namespace qlty_peer
