// The `qlty` program on many processes: `mpirun -n K qlty infer` writes the bytes of one process for 1, 2 and 4
// ranks (2D and 3D, Zarr input, std and argmax); kill -9 of one rank ends the run, and a rerun with another rank
// count finishes it to the same bytes without temporary files; `--part i/K` processes started together share one
// output, and `qlty info` names a part never run; a rank whose model throws ends every rank with its message.
#include "../models.hpp"
#include "cli_common.hpp"

#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace {

using namespace qlty_cli_test;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_cli_mpi") {}
};

/// Every file of an output but the bookkeeping in `.qlty` (markers, parts, lock), by relative path.
std::map<std::string, std::string> output_files(const std::string& out) {
  std::map<std::string, std::string> all, kept;
  files_under(out, "", all);
  for (auto& [name, bytes] : all)
    if (name.rfind(".qlty/", 0) != 0) kept[name] = std::move(bytes);
  return kept;
}

void expect_same_output(const std::string& got, const std::string& want) {
  const auto g = output_files(got), w = output_files(want);
  EXPECT_EQ(g.size(), w.size()) << got;
  for (const auto& [name, bytes] : w) {
    const auto it = g.find(name);
    if (it == g.end())
      ADD_FAILURE() << got << ": " << name << " missing";
    else
      EXPECT_TRUE(it->second == bytes) << got << ": " << name << " differs";
  }
  std::map<std::string, std::string> every;
  files_under(got, "", every);
  for (const auto& [name, bytes] : every) EXPECT_EQ(name.find(".tmp"), std::string::npos) << "temporary file " << name;
  EXPECT_FALSE(qlty::detail::path_exists(got + "/.qlty/carry")) << "carry files left in " << got;
}

int64_t done_count(const std::string& out) {
  const std::string d = out + "/.qlty/done";
  return qlty::detail::is_directory(d) ? static_cast<int64_t>(qlty::detail::list_dir(d).size()) : 0;
}

void write_zarr(const std::string& path, const torch::Tensor& x, int64_t chunk) {
  std::vector<int64_t> chunks(x.dim(), chunk);
  chunks[0] = chunks[1] = 1;
  qlty::zarr::Array::create(path, qlty::zarr::ArrayOptions(x.sizes().vec(), chunks))
      .write(std::vector<int64_t>(x.dim(), 0), x);
}

TEST(CliParts, ThreePartsStartedTogetherThenTheFourth) {
  TempDir dir;
  torch::manual_seed(21);
  write_zarr(dir / "in.zarr", torch::randn({1, 1, 40, 36, 32}), 10);
  auto args = [&](const std::string& out, const std::string& part) {
    std::vector<std::string> a = {
        "infer",   "-i", dir / "in.zarr", "-o", out,     "-w",       "12",        "-s", "9", "-b", "2",
        "--block", "8",  "--chunks",      "8",  "--std", "--argmax", "--threads", "1"};
    if (!part.empty()) a.insert(a.end(), {"--part", part});
    return a;
  };
  auto r = run(args(dir / "one.zarr", ""), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;

  // Parts 0, 1 and 2 of 4 at the same moment on a fresh output.
  std::vector<pid_t> pids;
  for (int k = 0; k < 3; ++k)
    pids.push_back(start(args(dir / "parts.zarr", std::to_string(k) + "/4"), dir.path, QLTY_CLI, std::to_string(k)));
  for (int k = 0; k < 3; ++k) EXPECT_EQ(wait_for(pids[k]), 0) << slurp(dir / (std::to_string(k) + "stderr"));
  EXPECT_NE(slurp(dir / "0stdout").find("(part 0/4)"), std::string::npos) << slurp(dir / "0stdout");
  r = run({"info", dir / "parts.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* part : {"part 0/4: 25 of 25 blocks done (complete)", "part 2/4: 25 of 25 blocks done (complete)",
                           "part 3/4: 0 of 25 blocks done (missing: never started)", "75 of 100 blocks done"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in " << r.out;
  // Every chunk the three parts wrote equals one run's.
  const auto want = output_files(dir / "one.zarr"), got = output_files(dir / "parts.zarr");
  int64_t same = 0;
  for (const auto& [name, bytes] : got) {
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".lock") == 0) continue;  // a complete run drops them
    ASSERT_TRUE(want.count(name)) << name;
    if (qlty::detail::base_name(name)[0] != '.') {  // chunks, not metadata or lock files
      EXPECT_TRUE(want.at(name) == bytes) << name;
      ++same;
    }
  }
  EXPECT_EQ(same, 75 * 5);  // 75 blocks of one chunk in mean and std (2 channels each) and argmax
  r = run(args(dir / "parts.zarr", "3/4"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("qlty infer: wrote"), std::string::npos) << r.out;
  expect_same_output(dir / "parts.zarr", dir / "one.zarr");
  expect_fails(run(args(dir / "x.zarr", "4/4"), dir.path), {"--part", "0 <= i < K", "\"4/4\""});
  auto over = args(dir / "x.zarr", "0/2");
  over.push_back("--overwrite");
  expect_fails(run(over, dir.path),
               {"--overwrite: qlty::infer_blockwise: overwrite cannot be combined with a part (0 of 2)"});
}

TEST(CliParts, ThreadsDefaultToTheCoresThisProcessMayUse) {
  TempDir dir;
  write_zarr(dir / "in.zarr", torch::randn({1, 1, 20, 20}), 10);
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  const int cores = CPU_COUNT(&set);
  auto r = run({"infer", "-i", dir / "in.zarr", "-o", dir / "a.zarr", "-w", "8"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("; " + std::to_string(cores) + (cores == 1 ? " thread\n" : " threads\n")), std::string::npos)
      << r.out;
  // Bound to one core (as a launcher or taskset does): one thread.
  r = run({"-c", "0", QLTY_CLI, "infer", "-i", dir / "in.zarr", "-o", dir / "b.zarr", "-w", "8"}, dir.path,
          "/usr/bin/taskset");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("; 1 thread\n"), std::string::npos) << r.out;
  r = run({"infer", "-i", dir / "in.zarr", "-o", dir / "c.zarr", "-w", "8", "--threads", "3"}, dir.path);
  EXPECT_NE(r.out.find("; 3 threads\n"), std::string::npos) << r.out;
}

#ifdef QLTY_MPIEXEC

/// mpirun as root in a container, more ranks than cores.
std::vector<std::string> mpirun(int ranks, std::vector<std::string> args) {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  std::vector<std::string> a = {"--oversubscribe", "-n", std::to_string(ranks), QLTY_CLI};
  a.insert(a.end(), args.begin(), args.end());
  return a;
}

TEST(CliMpi, SameBytesFor1To4Ranks2DAnd3D) {
  TempDir dir;
  torch::manual_seed(22);
  write_zarr(dir / "vol.zarr", torch::randn({1, 2, 30, 36, 28}), 9);
  write_zarr(dir / "img.zarr", torch::randn({2, 1, 70, 50}), 16);
  qlty_test::conv_model(3, 2, 3, dir / "m3.pt");
  qlty_test::conv_model(2, 1, 2, dir / "m2.pt");
  struct Case {
    std::string input, model;
    std::vector<std::string> extra;
  };
  const std::vector<Case> cases = {{"vol.zarr", "m3.pt", {"-w", "10", "-s", "7", "--block", "8", "--chunks", "8"}},
                                   {"img.zarr", "m2.pt", {"-w", "16,12", "-s", "11,9", "--block", "16,50"}}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.input);
    auto args = [&](const std::string& out) {
      std::vector<std::string> a = {"infer",    "-i",           dir / c.input, "-o",        dir / out,
                                    "-m",       dir / c.model,  "-b",          "2",         "--std",
                                    "--argmax", "--batch-size", "3",           "--threads", "1"};
      a.insert(a.end(), c.extra.begin(), c.extra.end());
      return a;
    };
    auto r = run(args(c.input + ".one"), dir.path);
    ASSERT_EQ(r.code, 0) << r.err;
    for (int ranks : {1, 2, 4}) {
      SCOPED_TRACE(ranks);
      const std::string out = c.input + "." + std::to_string(ranks);
      r = run(mpirun(ranks, args(out)), dir.path, QLTY_MPIEXEC);
      ASSERT_EQ(r.code, 0) << r.out << r.err;
      expect_same_output(dir / out, dir / (c.input + ".one"));
      if (ranks > 1) {
        // The summary gives each rank's share; the progress goes to rank 0's stderr as lines.
        for (int k = 0; k < ranks; ++k)
          EXPECT_NE(r.out.find("qlty infer: rank " + std::to_string(k) + ": "), std::string::npos) << r.out;
        EXPECT_NE(r.err.find("qlty infer: 100% |"), std::string::npos) << r.err;
      }
    }
  }
}

/// The pids of mpirun's children that run qlty, by rank.
std::map<int, pid_t> rank_pids(pid_t mpirun_pid) {
  std::map<int, pid_t> out;
  for (const auto& e : qlty::detail::list_dir("/proc")) {
    if (e.empty() || e.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp("/proc/" + e + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos || stat.find("(qlty)") == std::string::npos) continue;
    if (std::atoi(stat.c_str() + close + 4) != mpirun_pid) continue;  // ") S <ppid>"
    const std::string env = slurp("/proc/" + e + "/environ");
    const auto at = env.find("OMPI_COMM_WORLD_RANK=");
    if (at != std::string::npos) out[std::atoi(env.c_str() + at + 21)] = std::atoi(e.c_str());
  }
  return out;
}

TEST(CliMpi, KillNineOneRankThenRerunWithAnotherCount) {
  TempDir dir;
  torch::manual_seed(23);
  write_zarr(dir / "vol.zarr", torch::randn({1, 1, 72, 72, 72}), 16);
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"infer",     "-i", dir / "vol.zarr", "-o", dir / out, "-w",       "12",
                                    "-s",        "6",  "--block",        "8",  "--std",   "--chunks", "8",
                                    "--threads", "1",  "--quiet"};
  };
  auto r = run(args("one.zarr"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  const pid_t mpi = start(mpirun(2, args("killed.zarr")), dir.path, QLTY_MPIEXEC);
  std::map<int, pid_t> pids;
  const auto t0 = std::chrono::steady_clock::now();
  while (done_count(dir / "killed.zarr") < 60 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  pids = rank_pids(mpi);
  ASSERT_EQ(pids.size(), 2u) << slurp(dir / "stderr");
  ASSERT_EQ(::kill(pids[1], SIGKILL), 0);
  const int code = wait_for(mpi);
  EXPECT_NE(code, 0) << "mpirun ended with 0 after a rank was killed";
  // mpirun may end before the rank it stopped has: a rerun leaves the temporary files of running processes alone
  // (they may still write them), so wait, as a batch system would, for the old ranks to end
  for (const auto& [rank, pid] : pids)
    for (int i = 0; i < 3000 && !qlty::detail::process_ended(pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const int64_t done = done_count(dir / "killed.zarr");
  EXPECT_GE(done, 60);
  EXPECT_LT(done, 729) << "the run finished before the kill; the test needs a longer run";
  r = run(mpirun(3, args("killed.zarr")), dir.path, QLTY_MPIEXEC);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(done_count(dir / "killed.zarr"), 729);
  expect_same_output(dir / "killed.zarr", dir / "one.zarr");
}

TEST(CliMpi, ARankWhoseModelThrowsEndsEveryRank) {
  TempDir dir;
  auto vol = torch::rand({1, 1, 32, 24, 24});
  vol[0][0][29][5][5] = 100.0f;  // only windows of the last slabs see it
  write_zarr(dir / "vol.zarr", vol, 8);
  // Fails on a batch of 3 windows that holds the bright voxel: the rank that computes it fails; with batches of 2
  // (a setting a resume may change) it runs. x * 2 does not depend on the batch, so the bytes do not either.
  qlty_test::script_model("    assert x.size(0) < 3 or bool(x.max() < 50.0), 'window too bright'\n    return x * 2.0",
                          dir / "m.pt");
  auto args = [&](const std::string& out, const std::string& batch) {
    return std::vector<std::string>{
        "infer",   "-i", dir / "vol.zarr", "-o", dir / out,   "-m", dir / "m.pt", "-w",           "8",  "-s", "6",
        "--block", "4",  "--chunks",       "4",  "--threads", "1",  "--quiet",    "--batch-size", batch};
  };
  auto r = run(mpirun(2, args("out.zarr", "3")), dir.path, QLTY_MPIEXEC);
  EXPECT_NE(r.code, 0) << r.out << r.err;
  for (const char* part : {"qlty: error: rank ", " of 2: [qlty.model]", "window too bright"})
    EXPECT_NE(r.err.find(part), std::string::npos) << part << " not in " << r.err;
  const int64_t done = done_count(dir / "out.zarr");
  EXPECT_LT(done, 8 * 6 * 6);
  // A rerun with 4 ranks finishes what is left; the blocks done before stay as they were.
  r = run(mpirun(4, args("out.zarr", "2")), dir.path, QLTY_MPIEXEC);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run(args("one.zarr", "2"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_output(dir / "out.zarr", dir / "one.zarr");
}

#endif  // QLTY_MPIEXEC

}  // namespace
