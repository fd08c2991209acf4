// Zarr write and read throughput next to plain file I/O of the same bytes in the same run.
//
// A 256 MiB float32 array (256, 512, 512) in 1 MiB chunks (64, 64, 64), written whole and read whole, with no
// compressor, blosc-lz4 with byte shuffle, and zstd level 1. Data: a smooth field plus noise (compresses ~2x,
// like real tomograms). The reference writes the same bytes to one file (temp file + rename, like a chunk) and
// reads it back. Files live in $QLTY_BENCH_DIR (default /tmp); the page cache is warm, as in a real run that
// rewrites what it just read. Args: threads.
//
// Sharded against unsharded (Zarr v3, uncompressed): a 1 GiB float32 array (256, 1024, 1024) in 64^3 chunks, one
// file each (1024 files), or in 256^3 shards of 64^3 inner chunks (16 files), written whole; a region of 96^3 at an
// unaligned offset read (27 chunks fetched), and one 64^3 chunk rewritten (a whole 64 MiB shard when sharded: the
// price of a write smaller than a shard). The reference writes and reads 1 GiB as 2 plain files. Whole writes are
// timed after one untimed write, so each replaces files that exist (a first write of 1 GiB of new files pays the
// page cache's growth and dirty-page throttling: seconds here, whatever writes). `files` counts the files of each
// array.
//
// Counters: MB/s via bytes_per_second; `of_file` = throughput / the plain file's at the same thread count (for region
// reads, of the bytes of the chunks fetched).
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

// ---- sharded against unsharded, 1 GiB

const std::vector<int64_t> kBigShape{256, 1024, 1024};
const int64_t kBigBytes = 1LL << 30;

const torch::Tensor& big_data() {
  static const torch::Tensor x = [] {
    torch::manual_seed(1);
    return torch::randn(kBigShape);  // uncompressed arrays: the values do not matter, only that they are written
  }();
  return x;
}

void big_finish(benchmark::State& state, double sec, int64_t bytes, const std::string& key, bool reference) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  const double rate = bytes / sec;
  state.counters["MB_per_s"] = rate / 1e6;
  const auto k = std::make_pair("big_" + key, state.range(0));
  if (reference)
    file_rate[k] = rate;
  else if (file_rate.count(k))
    state.counters["of_file"] = rate / file_rate[k];
}

void BM_PlainFileWrite1GiB(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  qlty::detail::make_dirs(bench_dir());
  const auto& x = big_data();
  const std::string f = bench_dir() + "/plain_big.bin";
  auto write = [&] {
    at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        qlty::detail::atomic_write(f + std::to_string(p), static_cast<const char*>(x.data_ptr()) + p * kBigBytes / 2,
                                   kBigBytes / 2, false);
    });
  };
  write();  // untimed: the timed writes replace files that exist, as the arrays' do
  const double sec = seconds_per_iteration(state, write);
  big_finish(state, sec, kBigBytes, "write", true);
}

void BM_PlainFileRead1GiB(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const std::string f = bench_dir() + "/plain_big.bin";
  for (int p = 0; p < 2; ++p)  // run alone (a filter): write them first
    if (!qlty::detail::path_exists(f + std::to_string(p)))
      qlty::detail::atomic_write(f + std::to_string(p),
                                 static_cast<const char*>(big_data().data_ptr()) + p * kBigBytes / 2, kBigBytes / 2,
                                 false);
  std::vector<uint8_t> buf(static_cast<size_t>(kBigBytes / 2));
  const double sec = seconds_per_iteration(state, [&] {
    for (int p = 0; p < 2; ++p) qlty::detail::read_file_into(f + std::to_string(p), buf.data(), kBigBytes / 2);
  });
  big_finish(state, sec, kBigBytes, "read", true);
}

Array big_array(bool sharded) {
  ArrayOptions o(kBigShape, sharded ? std::vector<int64_t>{256, 256, 256} : std::vector<int64_t>{64, 64, 64});
  if (sharded) o.inner_chunks = {64, 64, 64};
  o.zarr_format = 3;
  o.codecs = {};
  o.overwrite = true;
  return Array::create(bench_dir() + (sharded ? "/sharded" : "/unsharded"), o);
}

void big_write(benchmark::State& state, bool sharded) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = big_array(sharded);
  a.write({0, 0, 0}, big_data());  // untimed: the first write of 1 GiB of new files pays the page cache's growth
  const double sec = seconds_per_iteration(state, [&] { a.write({0, 0, 0}, big_data()); });
  state.counters["files"] = static_cast<double>(a.stored_chunk_count());
  big_finish(state, sec, kBigBytes, "write", false);
}

/// The array the write benchmark left, or (run alone) one written now.
Array written_big_array(bool sharded) {
  const std::string path = bench_dir() + (sharded ? "/sharded" : "/unsharded");
  if (qlty::zarr::node_type(path) == qlty::zarr::NodeType::Array) return Array::open(path);
  auto a = big_array(sharded);
  a.write({0, 0, 0}, big_data());
  return a;
}

void big_region_read(benchmark::State& state, bool sharded) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = written_big_array(sharded);
  const std::vector<int64_t> off{100, 300, 500}, box{96, 96, 96};  // meets 3 x 3 x 3 chunks of 64^3
  torch::Tensor out;
  const double sec = seconds_per_iteration(state, [&] { out = a.read(off, box); });
  if (!torch::equal(out, big_data().narrow(0, 100, 96).narrow(1, 300, 96).narrow(2, 500, 96)))
    state.SkipWithError("read back different values");
  big_finish(state, sec, 27LL << 20, "read", false);  // the bytes of the 27 chunks fetched
}

void big_chunk_rewrite(benchmark::State& state, bool sharded) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = written_big_array(sharded);
  const auto chunk = big_data().narrow(0, 64, 64).narrow(1, 128, 64).narrow(2, 192, 64).contiguous();
  const double sec = seconds_per_iteration(state, [&] { a.write({64, 128, 192}, chunk); });
  big_finish(state, sec, 1LL << 20, "write", false);
}

void BM_UnshardedWrite1GiB(benchmark::State& s) { big_write(s, false); }
void BM_ShardedWrite1GiB(benchmark::State& s) { big_write(s, true); }
void BM_UnshardedRegionRead(benchmark::State& s) { big_region_read(s, false); }
void BM_ShardedRegionRead(benchmark::State& s) { big_region_read(s, true); }
void BM_UnshardedChunkRewrite(benchmark::State& s) { big_chunk_rewrite(s, false); }
void BM_ShardedChunkRewrite(benchmark::State& s) { big_chunk_rewrite(s, true); }

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
QLTY_BENCH(BM_PlainFileWrite1GiB);
QLTY_BENCH(BM_PlainFileRead1GiB);
QLTY_BENCH(BM_UnshardedWrite1GiB);
QLTY_BENCH(BM_ShardedWrite1GiB);
QLTY_BENCH(BM_UnshardedRegionRead);
QLTY_BENCH(BM_ShardedRegionRead);
QLTY_BENCH(BM_UnshardedChunkRewrite);
QLTY_BENCH(BM_ShardedChunkRewrite);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  qlty::detail::remove_tree(bench_dir());
  return 0;
}
