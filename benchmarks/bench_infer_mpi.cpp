// Blockwise inference on several processes: `mpirun -n R qlty infer` (the real program, as a user runs it) on the
// 512^3 case of bench_infer: a 512^3 float32 Zarr volume (64^3 chunks), the built-in network, window 128, step 96,
// border 16, batch 8, 1 thread per rank: 125 windows.
//
// Counters of BM_Ranks (args: ranks), all from the same run:
//   wall_s: the mpirun command, start to end (the launcher's start included);
//   speedup: the 1-rank wall time of this run / this wall time (this machine has 2 cores: the target for 2 ranks is
//            >= 1.7);
//   evals_per_window: model evaluations / windows of the grid (1.0: no window computed twice);
//   model_s, outside_model_s: per rank, the largest time in the model's calls and the largest time outside them
//            (reading the input, blending, writing, waiting for claims);
//   bound: the speedup the window rows allow: all windows / the most windows one rank computed.
// BM_Copy: memcpy of 512 MiB, the machine's memory bandwidth in this run. Files go to $QLTY_BENCH_DIR (/tmp).
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "../tools/qlty/builtin.hpp"
#include "copy_reference.hpp"

namespace {

constexpr int64_t kS = 512;

std::string bench_dir() { return qlty_bench::bench_dir("qlty_bench_infer_mpi"); }

const std::string& input() {
  static const std::string path = [] {
    const std::string p = bench_dir() + "/input.zarr";
    qlty::detail::make_dirs(bench_dir());
    qlty::zarr::ArrayOptions o({1, 1, kS, kS, kS}, {1, 1, 64, 64, 64});
    o.overwrite = true;
    qlty::zarr::Array::create(p, o).write({0, 0, 0, 0, 0},
                                          qlty::tool::shepp_logan_3d(kS, 0.1, 1).view({1, 1, kS, kS, kS}));
    return p;
  }();
  return path;
}

void BM_Ranks(benchmark::State& state) {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  const int64_t ranks = state.range(0);
  const std::string log = bench_dir() + "/ranks" + std::to_string(ranks) + ".txt";
  const std::string cmd = std::string(QLTY_MPIEXEC) + " --oversubscribe -n " + std::to_string(ranks) + " " + QLTY_CLI +
                          " infer -i " + input() + " -o " + bench_dir() +
                          "/out.zarr -w 128 -s 96 -b 16 --batch-size 8 --threads 1 --overwrite > " + log + " 2>&1";
  static double one_rank_s = 0;
  double wall = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream f(log);
      state.SkipWithError(("mpirun failed: " + std::string(std::istreambuf_iterator<char>(f), {})).c_str());
      return;
    }
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(wall);
  }
  if (ranks == 1) one_rank_s = wall;
  // The program's summary: one line for one process, one line per rank for several.
  std::ifstream f(log);
  const std::string text(std::istreambuf_iterator<char>(f), {});
  double model = 0, outside = 0;
  int64_t evals = 0, most = 0;
  const std::regex one(R"((\d+) windows in ([\d.]+) s .*; ([\d.]+) s in the model)");
  const std::regex per_rank(
      R"(rank \d+: \d+ blocks, (\d+) windows computed, \d+ taken from other ranks, ([\d.]+) s \(([\d.]+) s in the model\))");
  auto add = [&](int64_t w, double s, double m) {
    evals += w;
    most = std::max(most, w);
    model = std::max(model, m);
    outside = std::max(outside, s - m);
  };
  std::smatch m;
  if (ranks == 1) {
    if (std::regex_search(text, m, one)) add(std::stoll(m[1]), std::stod(m[2]), std::stod(m[3]));
  } else {
    for (std::sregex_iterator it(text.begin(), text.end(), per_rank), end; it != end; ++it)
      add(std::stoll((*it)[1]), std::stod((*it)[2]), std::stod((*it)[3]));
  }
  state.counters["wall_s"] = wall;
  if (one_rank_s > 0) state.counters["speedup"] = one_rank_s / wall;
  state.counters["evals_per_window"] = double(evals) / 125.0;
  state.counters["model_s"] = model;
  state.counters["outside_model_s"] = outside;
  if (most > 0) state.counters["bound"] = 125.0 / double(most);
}

void BM_Copy(benchmark::State& state) { qlty_bench::copy_reference(state, int64_t(512) << 20, "512MiB"); }

}  // namespace

BENCHMARK(BM_Copy)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Ranks)->Arg(1)->Arg(2)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

BENCHMARK_MAIN();
