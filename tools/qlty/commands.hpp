#pragma once
// The program's subcommands, CLI11's subcom_in_files habit: each setup_*() registers its subcommand's flags on
// `app` and returns how to run it once parsed. main.cpp only calls them.

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace qlty::tool {

/// A registered subcommand and its run (the exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command setup_infer(CLI::App& app);
Command setup_demo(CLI::App& app);
Command setup_info(CLI::App& app);
Command setup_convert(CLI::App& app);

/// Every subcommand, in the order of `qlty --help`.
inline std::vector<Command> setup_commands(CLI::App& app) {
  return {setup_infer(app), setup_demo(app), setup_info(app), setup_convert(app)};
}

}  // namespace qlty::tool
