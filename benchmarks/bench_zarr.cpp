// Zarr write and read throughput next to plain file I/O of the same bytes in the same run.
//
// A 256 MiB float32 array (256, 512, 512) in 1 MiB chunks (64, 64, 64), written whole and read whole, with no
// compressor, blosc-lz4 with byte shuffle, and zstd level 1. Data: a smooth field plus noise (compresses ~2x,
// like real tomograms). The reference writes the same bytes to one file (temp file + rename, like a chunk) and
// reads it back. Files live in $QLTY_BENCH_DIR (default /tmp); the page cache is warm, as in a real run that
// rewrites what it just read. Args: threads.
//
// Counters: MB/s via bytes_per_second; `of_file` = throughput / the plain file's at the same thread count.
#include <benchmark/benchmark.h>
#include <qlty/zarr.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>

namespace {

using qlty::zarr::Array;
using qlty::zarr::ArrayOptions;
using qlty::zarr::Codec;

const std::vector<int64_t> kShape{256, 512, 512}, kChunks{64, 64, 64};
const int64_t kBytes = 256LL << 20;

std::string bench_dir() {
  const char* d = std::getenv("QLTY_BENCH_DIR");
  return std::string(d ? d : "/tmp") + "/qlty_bench_zarr";
}

const torch::Tensor& data() {
  static const torch::Tensor x = [] {
    torch::manual_seed(0);
    auto z = torch::linspace(0, 6.28, kShape[0]).view({-1, 1, 1});
    auto y = torch::linspace(0, 6.28, kShape[1]).view({1, -1, 1});
    auto xx = torch::linspace(0, 6.28, kShape[2]).view({1, 1, -1});
    auto v = (z.sin() * y.cos() + xx.sin() * 0.5) * 1000 + 3 * torch::randn(kShape);
    return v.round_().to(torch::kFloat).contiguous();  // integer-valued floats with noise: ~2-3x with lz4
  }();
  return x;
}

std::map<std::pair<std::string, int64_t>, double> file_rate;  // (write|read, threads) -> bytes/s

template <typename F>
double seconds_per_iteration(benchmark::State& state, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) f();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return dt / static_cast<double>(state.iterations());
}

void finish(benchmark::State& state, double sec, const std::string& key, bool reference) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kBytes);
  const double rate = kBytes / sec;
  state.counters["MB_per_s"] = rate / 1e6;
  const auto k = std::make_pair(key, state.range(0));
  if (reference) {
    file_rate[k] = rate;
  } else if (file_rate.count(k)) {
    state.counters["of_file"] = rate / file_rate[k];
  }
}

void BM_PlainFileWrite(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  qlty::detail::make_dirs(bench_dir());
  const auto& x = data();
  const std::string f = bench_dir() + "/plain.bin";
  // Threads write halves of the bytes to separate files, as chunk writers would.
  const double sec = seconds_per_iteration(state, [&] {
    const int64_t parts = state.range(0);
    at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        qlty::detail::atomic_write(f + std::to_string(p), static_cast<const char*>(x.data_ptr()) + p * kBytes / parts,
                                   kBytes / parts, false);
    });
  });
  finish(state, sec, "write", true);
}

void BM_PlainFileRead(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const std::string f = bench_dir() + "/plain.bin";
  const int64_t parts = state.range(0);
  const double sec = seconds_per_iteration(state, [&] {
    at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {  // into fresh memory, as a read of the array allocates its result
        const std::string name = f + std::to_string(p);
        const size_t n = static_cast<size_t>(kBytes / parts);
        std::unique_ptr<uint8_t[]> buf(new uint8_t[n]);
        const int fd = ::open(name.c_str(), O_RDONLY);
        size_t done = 0;
        while (done < n) {
          const ssize_t r = ::pread(fd, buf.get() + done, n - done, static_cast<off_t>(done));
          if (r <= 0) break;
          done += static_cast<size_t>(r);
        }
        ::close(fd);
        benchmark::DoNotOptimize(buf.get());
      }
    });
  });
  finish(state, sec, "read", true);
}

Array make_array(const std::string& name, std::vector<Codec> codecs) {
  ArrayOptions o(kShape, kChunks);
  o.codecs = std::move(codecs);
  o.overwrite = true;
  return Array::create(bench_dir() + "/" + name, o);
}

void zarr_write(benchmark::State& state, const std::string& name, const std::vector<Codec>& codecs) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = make_array(name, codecs);
  const auto& x = data();
  const double sec = seconds_per_iteration(state, [&] { a.write({0, 0, 0}, x); });
  int64_t stored = 0;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 8; ++j)
      for (int64_t k = 0; k < 8; ++k) stored += qlty::detail::read_file(a.chunk_path({i, j, k}), 1LL << 30)->size();
  state.counters["ratio"] = static_cast<double>(kBytes) / static_cast<double>(stored);
  finish(state, sec, "write", false);
}

void zarr_read(benchmark::State& state, const std::string& name) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = Array::open(bench_dir() + "/" + name);
  torch::Tensor out;
  const double sec = seconds_per_iteration(state, [&] { out = a.read(); });
  if (!torch::equal(out, data())) state.SkipWithError("read back different values");
  finish(state, sec, "read", false);
}

void BM_ZarrWriteNone(benchmark::State& s) { zarr_write(s, "none", {}); }
void BM_ZarrReadNone(benchmark::State& s) { zarr_read(s, "none"); }
void BM_ZarrWriteBloscLz4(benchmark::State& s) { zarr_write(s, "blosc", {Codec::blosc("lz4", 5, 1)}); }
void BM_ZarrReadBloscLz4(benchmark::State& s) { zarr_read(s, "blosc"); }
void BM_ZarrWriteZstd(benchmark::State& s) { zarr_write(s, "zstd", {Codec::zstd(1)}); }
void BM_ZarrReadZstd(benchmark::State& s) { zarr_read(s, "zstd"); }

#define QLTY_BENCH(fn) BENCHMARK(fn)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0)
QLTY_BENCH(BM_PlainFileWrite);
QLTY_BENCH(BM_PlainFileRead);
QLTY_BENCH(BM_ZarrWriteNone);
QLTY_BENCH(BM_ZarrReadNone);
QLTY_BENCH(BM_ZarrWriteBloscLz4);
QLTY_BENCH(BM_ZarrReadBloscLz4);
QLTY_BENCH(BM_ZarrWriteZstd);
QLTY_BENCH(BM_ZarrReadZstd);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  qlty::detail::remove_tree(bench_dir());
  return 0;
}
