// `qlty`: sliding-window inference of a model over whole images and volumes (infer), a self-checking demo on a
// phantom (demo), a description of arrays and outputs (info), and TIFF/.npy <-> Zarr conversion (convert). Each
// subcommand lives in its own files (commands.hpp); this file parses the command line and reports errors.
#include <qlty/version.hpp>

#include <c10/util/Exception.h>

#include "commands.hpp"
#include "launcher.hpp"

#include <cstdio>
#include <exception>
#include <string>

namespace {

std::string version() {
  return std::to_string(QLTY_VERSION_MAJOR) + "." + std::to_string(QLTY_VERSION_MINOR) + "." +
         std::to_string(QLTY_VERSION_PATCH);
}

/// Whether `first` (the first argument) names a subcommand, or is a flag of the program itself.
bool known_command(const std::string& first, const std::vector<qlty::tool::Command>& commands) {
  if (first.empty() || first[0] == '-') return true;
  for (const auto& c : commands)
    if (c.app->get_name() == first) return true;
  return false;
}

/// Runs the parsed command; errors become a message on stderr and an exit code: 2 for usage, 1 for the rest.
int run(const std::vector<qlty::tool::Command>& commands, const std::string& who) {
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "%s%s: %s\n", who.c_str(), e.get_name().c_str(), e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what_without_backtrace());
    return 2;
  } catch (const std::exception& e) {  // qlty::Error and the rest
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qlty: sliding-window inference over whole images and volumes, on CPU or GPU, in bounded memory, "
      "resumable"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version());
  const auto commands = qlty::tool::setup_commands(app);

  if (argc > 1 && !known_command(argv[1], commands)) {
    std::fprintf(stderr,
                 "qlty: error: unknown command \"%s\" (expected infer, demo, info or convert; see qlty --help)\n",
                 argv[1]);
    return 2;
  }
  const auto [world, world_rank] = qlty::tool::launcher_world();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (world_rank != 0) return e.get_exit_code();  // several processes: rank 0 reports argument errors
    return app.exit(e);
  }
  // Under a launcher, errors before MPI starts (an input one node cannot read) name the rank.
  const std::string who =
      world > 1 ? "qlty: error: rank " + std::to_string(world_rank) + " of " + std::to_string(world) + ": "
                : "qlty: error: ";
  return run(commands, who);
}
