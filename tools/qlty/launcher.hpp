#pragma once
// How the process was started: by an MPI launcher or not, and the CPU threads it should use.

#include <c10/util/StringUtil.h>
#include <CLI/CLI.hpp>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <utility>

namespace qlty::tool {

/// The process's launcher, from its environment: the world size and this process's rank (1 and 0 without one).
/// mpirun (Open MPI), srun with PMI or PMIx, and MPICH's Hydra are recognised.
inline std::pair<int, int> launcher_world() {
  auto env = [](std::initializer_list<const char*> names) -> const char* {
    for (const char* n : names)
      if (const char* v = std::getenv(n)) return v;
    return nullptr;
  };
  const char* size = env({"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"});
  const char* rank = env({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"});
  if (!size && !rank) return {1, 0};
  return {size ? std::max(1, std::atoi(size)) : 2, rank ? std::atoi(rank) : 0};
}

/// CPU cores this process may run on (its affinity mask), shared among the `local_ranks` processes on the node
/// when the launcher did not bind them.
inline int default_threads(int local_ranks) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int online = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  const int cores = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
  return std::max(1, cores >= online ? cores / std::max(1, local_ranks) : cores);
}

/// --threads: 0 (the default) or at most 4 threads per core online; more only slows memory-bound work down.
inline void check_threads(int64_t threads) {
  const int64_t cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)), most = 4 * cores;
  if (threads < 0 || threads > most)
    throw CLI::ValidationError("--threads", c10::str("must be in [0, ", most, "] (0: the default; at most 4 per core, ",
                                                     cores, " cores here), got ", threads));
}

}  // namespace qlty::tool
