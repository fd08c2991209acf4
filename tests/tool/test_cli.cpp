// The `qlty` program end to end: infer on .npy, TIFF and Zarr inputs, 2D and 3D, equals the in-memory quilt
// pipeline and zarr-python opens the output; kill -9 at random points and reruns give identical bytes; other
// settings, bad arguments and bad models give clear messages and non-zero exit codes; convert round trips; info and
// demo run; what MONAI and nnU-Net users expect (blends, --overlap, padding, flips, --axes, model outputs) works.
#include "cli_common.hpp"

#include <sys/stat.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "../models.hpp"
#include "formats/input.hpp"
#include "formats/png_preview.hpp"

namespace {

using namespace qlty_cli_test;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_cli") {}
};

/// The in-memory pipeline on x (N, C, *S) for a model file.
torch::Tensor reference(const torch::Tensor& x, const std::string& model_file, const std::vector<int64_t>& window,
                        const std::vector<int64_t>& step, int64_t border, double bw) {
  torch::NoGradGuard no_grad;
  auto m = torch::jit::load(model_file);
  auto f = x.to(torch::kFloat);
  if (x.dim() == 4) {
    qlty::NCYXQuilt q(x.size(2), x.size(3), window, step, border, bw);
    return std::get<0>(q.stitch(m.forward({q.unstitch(f)}).toTensor()));
  }
  qlty::NCZYXQuilt q(x.size(2), x.size(3), x.size(4), window, step, border, bw);
  return std::get<0>(q.stitch(m.forward({q.unstitch(f)}).toTensor()));
}

torch::Tensor read_output(const std::string& out) { return qlty::zarr::Array::open(out + "/0").read(); }

/// zarr-python (Debian's python3-zarr) opens the output group and sums its prediction.
void expect_zarr_python_reads(const std::string& out, const torch::Tensor& mean) {
#ifdef QLTY_ZARR_PYTHON
  const std::string script = out + ".py";
  std::ofstream(script) << "import sys, zarr\n"
                           "g = zarr.open_group(sys.argv[1], mode='r')\n"
                           "a = g['0']\n"
                           "ms = g.attrs['multiscales'][0]\n"
                           "assert ms['version'] == '0.4' and ms['datasets'][0]['path'] == '0', ms\n"
                           "assert len(ms['axes']) == a.ndim, (ms['axes'], a.shape)\n"
                           "print(list(a.shape), repr(float(a[...].astype('float64').sum())))\n";
  const std::string cmd = std::string(QLTY_ZARR_PYTHON) + " " + script + " " + out + " > " + out + ".txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(out + ".txt");
  std::istringstream in(slurp(out + ".txt"));
  std::string shape;
  double sum = 0;
  std::getline(in, shape, ']');
  in.ignore(1) >> sum;
  EXPECT_EQ(shape + "]", c10::str(mean.sizes())) << slurp(out + ".txt");
  EXPECT_NEAR(sum, mean.to(torch::kDouble).sum().item<double>(), 1e-9 * mean.numel());
#else
  (void)out;
  (void)mean;
#endif
}

TEST(Cli, InferOnNpyTiffAndZarrEqualsInMemory) {
  TempDir dir;
  const std::string model2 = dir / "m2.pt", model3 = dir / "m3.pt";
  qlty_test::conv_model(2, 3, 2, model2);
  qlty_test::conv_model(3, 1, 2, model3);
  torch::manual_seed(8);

  // A volume as .npy (Z, Y, X) float32.
  auto vol = torch::randn({30, 26, 21});
  write_npy_by_hand(dir / "vol.npy", vol, "<f4");
  auto r = run({"infer",
                "-m",
                model3,
                "-i",
                dir / "vol.npy",
                "-o",
                dir / "vol.zarr",
                "-w",
                "10",
                "-s",
                "7",
                "-b",
                "2",
                "--border-weight",
                "0.2",
                "--block",
                "8",
                "--chunks",
                "8",
                "--std",
                "--argmax",
                "--batch-size",
                "5"},
               dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("qlty infer: wrote"), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar without a terminal
  auto ref = reference(vol.view({1, 1, 30, 26, 21}), model3, {10, 10, 10}, {7, 7, 7}, 2, 0.2);
  auto got = read_output(dir / "vol.zarr");
  EXPECT_LT((got - ref).abs().max().item<double>(), 2e-6);
  expect_zarr_python_reads(dir / "vol.zarr", got);

  // An RGB image as TIFF: (1, 3, Y, X) uint8; windows per axis.
  auto rgb = torch::randint(0, 256, {1, 3, 45, 38}, torch::kByte);
  qlty::tool::write_tiff(dir / "rgb.tif", rgb);
  r = run({"infer", "-m", model2, "-i", dir / "rgb.tif", "-o", dir / "rgb.zarr", "-w", "16,12", "-s", "10,9", "-b", "3",
           "--quiet"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  ref = reference(rgb, model2, {16, 12}, {10, 9}, 3, 0.1);
  got = read_output(dir / "rgb.zarr");
  EXPECT_LT((got - ref).abs().max().item<double>(), 2e-6);
  expect_zarr_python_reads(dir / "rgb.zarr", got);

  // A uint16 stack as TIFF (pages = Z), values above 32767, written with libtiff directly.
  auto stack = torch::randint(30000, 65536, {3, 5, 7}, torch::kInt);
  {
    TIFF* t = TIFFOpen((dir / "stack.tif").c_str(), "w");
    ASSERT_NE(t, nullptr);
    for (int64_t z = 0; z < 3; ++z) {
      TIFFSetField(t, TIFFTAG_IMAGEWIDTH, 7);
      TIFFSetField(t, TIFFTAG_IMAGELENGTH, 5);
      TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 16);
      TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
      TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, SAMPLEFORMAT_UINT);
      TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
      for (int64_t y = 0; y < 5; ++y) {
        std::vector<uint16_t> row(7);
        for (int64_t x = 0; x < 7; ++x) row[x] = static_cast<uint16_t>(stack[z][y][x].item<int>());
        ASSERT_EQ(TIFFWriteScanline(t, row.data(), static_cast<uint32_t>(y), 0), 1);
      }
      TIFFWriteDirectory(t);
    }
    TIFFClose(t);
  }
  EXPECT_TRUE(torch::equal(qlty::tool::read_tiff(dir / "stack.tif").to(torch::kInt), stack));  // uint16 from 2.3

  // N = 2 volumes with 1 channel as a Zarr array.
  auto multi = torch::randn({2, 1, 14, 15, 16});
  qlty::zarr::Array::create(dir / "multi.zarr", qlty::zarr::ArrayOptions({2, 1, 14, 15, 16}, {1, 1, 5, 5, 5}))
      .write({0, 0, 0, 0, 0}, multi);
  r = run({"infer", "-m", model3, "-i", dir / "multi.zarr", "-o", dir / "multi.out.zarr", "-w", "8", "-s", "5"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ref = reference(multi, model3, {8, 8, 8}, {5, 5, 5}, 0, 0.1);
  got = read_output(dir / "multi.out.zarr");
  EXPECT_LT((got - ref).abs().max().item<double>(), 2e-6);

  // info on the output.
  r = run({"info", dir / "vol.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* part :
       {"OME-Zarr image (NGFF 0.4), axes tczyx", "0: Zarr v2 array, shape [1, 2, 30, 26, 21]", "std: Zarr v2 array",
        "labels/argmax/0: Zarr v2 array, shape [1, 1, 30, 26, 21]", "blocks done (complete)"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in " << r.out;
}

TEST(Cli, KillNineAtRandomPointsThenRerunGivesIdenticalBytes) {
  TempDir dir;
  auto vol = torch::randn({48, 48, 48});
  write_npy_by_hand(dir / "vol.npy", vol, "<f4");
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{
        "infer",   "-i", dir / "vol.npy", "-o", out,     "-w",           "12", "-s",        "9", "-b", "2",
        "--block", "8",  "--chunks",      "8",  "--std", "--batch-size", "3",  "--threads", "1"};
  };
  auto r = run(args(dir / "whole.zarr"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;

  // Kill the run when it has marked a random number (1-60) of further blocks done, plus a random 0-5 ms: at
  // arbitrary points of computing, writing and marking blocks. Then run it to the end.
  const std::string done = dir / "killed.zarr/.qlty/done";
  auto done_count = [&] {
    return qlty::detail::is_directory(done) ? static_cast<int64_t>(qlty::detail::list_dir(done).size()) : 0;
  };
  std::mt19937 rng(1234);
  int kills = 0;
  for (; kills < 6; ++kills) {
    const int64_t before = done_count(), target = before + std::uniform_int_distribution<int64_t>(1, 60)(rng);
    const pid_t pid = start(args(dir / "killed.zarr"), dir.path);
    int status = 0;
    bool exited = false;
    while (done_count() < target) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (exited) {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(dir / "stderr");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 5000)(rng)));
    ::kill(pid, SIGKILL);
    ASSERT_EQ(wait_for(pid), 128 + SIGKILL);
  }
  r = run(args(dir / "killed.zarr"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GE(kills, 3);
  std::map<std::string, std::string> want, got;
  files_under(dir / "whole.zarr", "", want);
  files_under(dir / "killed.zarr", "", got);
  for (const auto& [name, bytes] : got) {
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << "stale temporary file " << name;
    if (want.count(name)) EXPECT_TRUE(want[name] == bytes) << name << " differs";
  }
  for (const auto& [name, bytes] : want) EXPECT_TRUE(got.count(name)) << name << " missing";
}

TEST(Cli, ClearErrorsAndExitCodes) {
  TempDir dir;
  write_npy_by_hand(dir / "img.npy", torch::randn({20, 24}), "<f4");
  write_npy_by_hand(dir / "line.npy", torch::randn({20}), "<f4");
  write_npy_by_hand(dir / "f8be.npy", torch::randn({4, 4}).to(torch::kDouble), ">f8");
  std::ofstream(dir / "junk.npy") << "not numpy";
  std::ofstream(dir / "junk.tif") << "not a tiff";
  const std::string img = dir / "img.npy";
  auto infer = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"infer", "-o", dir / "out.zarr"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path);
  };
  expect_fails(infer({"-i", dir / "nothing.npy", "-w", "8"}), {"[qlty.io]", "nothing.npy"});
  expect_fails(infer({"-i", dir / "nothing.zarr", "-w", "8"}), {"[qlty.input]", "nothing.zarr: no such file"});
  expect_fails(infer({"-i", dir / "line.npy", "-w", "8"}), {"line.npy", "got 1 axes (shape [20])"});
  expect_fails(infer({"-i", dir / "f8be.npy", "-w", "2"}), {"f8be.npy", "dtype '>f8'"});
  expect_fails(infer({"-i", dir / "junk.npy", "-w", "8"}), {"junk.npy", "no NumPy magic bytes"});
  expect_fails(infer({"-i", dir / "junk.tif", "-w", "8"}), {"junk.tif", "not a readable TIFF"});
  expect_fails(infer({"-i", img}), {"--window is required"});
  expect_fails(infer({"-i", img, "-w", "30", "--pad", "none"}),
               {"--window: [30, 30] is larger than the input [1, 1, 20, 24]", "--pad none"});
  expect_fails(infer({"-i", img, "-w", "8,8,8"}), {"--window: expected 1 or 2 values", "got 3"});
  expect_fails(infer({"-i", img, "-w", "8", "--device", "tpu:9"}), {"--device", "tpu:9"});
  expect_fails(infer({"-i", img, "-w", "8", "--batch-size", "0"}), {"--batch-size"});
  expect_fails(infer({"-i", img, "-w", "8", "-m", dir / "none.pt"}), {"none.pt"});
  expect_fails(infer({"-i", img, "-w", "8", "-m", img}), {"[qlty.model]", "not a TorchScript model"});

  qlty_test::script_model("    return x[:, :, 1:, :]", dir / "shrink.pt");
  expect_fails(infer({"-i", img, "-w", "8", "-m", dir / "shrink.pt"}),
               {"[qlty.model]", "returned shape [1, 1, 7, 8]", "expected [1, C', 8, 8]"});
  qlty_test::script_model("    assert x.size(0) == 1, 'boom'\n    return x", dir / "boom.pt");
  expect_fails(infer({"-i", img, "-w", "8", "-s", "4", "-m", dir / "boom.pt", "--overwrite"}),
               {"[qlty.model]", "block 0 (image 0, y 0..20, x 0..24)", "boom"});

  // A resume with other settings; then the same settings finish it.
  auto r =
      infer({"-i", img, "-w", "8", "-s", "6", "--block", "8,24", "--chunks", "8", "--max-blocks", "1", "--overwrite"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("run the same command again"), std::string::npos) << r.out;
  r = run({"info", dir / "out.zarr"}, dir.path);
  EXPECT_NE(r.out.find("1 of 3 blocks done (rerun the same command to finish)"), std::string::npos) << r.out;
  expect_fails(infer({"-i", img, "-w", "8", "-s", "5", "--block", "8,24", "--chunks", "8"}),
               {"[qlty.checkpoint]", "--step/--overlap: [6,6] there, [5,5] now", "--overwrite to start over"});
  r = infer({"-i", img, "-w", "8", "-s", "6", "--block", "8,24", "--chunks", "8"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 of 3 blocks computed, 1 already done"), std::string::npos) << r.out;

  // A resume with another input file of the same shape is refused, naming both.
  write_npy_by_hand(dir / "img2.npy", torch::randn({20, 24}), "<f4");
  ASSERT_EQ(
      run({"infer", "-i", img, "-w", "8", "-o", dir / "r.zarr", "--block", "8,24", "--max-blocks", "1"}, dir.path).code,
      0);
  expect_fails(run({"infer", "-i", dir / "img2.npy", "-w", "8", "-o", dir / "r.zarr", "--block", "8,24"}, dir.path),
               {"[qlty.checkpoint]", "input (--input): \"file:", "img.npy", "there", "img2.npy", "now"});
  // An output that is the input, holds it or lies inside it: refused, the input untouched.
  qlty::zarr::Array::create(dir / "in.zarr", qlty::zarr::ArrayOptions({20, 24}, {8, 8}))
      .write({0, 0}, torch::ones({20, 24}));
  for (const std::string out : {dir / "in.zarr", dir / "in.zarr/sub", dir.path})
    expect_fails(run({"infer", "-i", dir / "in.zarr", "-w", "8", "-o", out, "--overwrite"}, dir.path),
                 {"[qlty.overlap]", "the output would be the input"});
  expect_fails(run({"convert", dir / "in.zarr", dir / "in.zarr", "--overwrite"}, dir.path), {"[qlty.overlap]"});
  expect_fails(run({"convert", img, dir / "img.npy", "--overwrite"}, dir.path), {"[qlty.overlap]"});
  EXPECT_TRUE(torch::equal(qlty::zarr::Array::open(dir / "in.zarr").read(), torch::ones({20, 24})));

  // An output where a foreign folder is.
  qlty::detail::make_dirs(dir / "photos/2024");
  expect_fails(run({"infer", "-i", img, "-w", "8", "-o", dir / "photos", "--overwrite"}, dir.path),
               {"[qlty.zarr.exists]", "not a Zarr node"});
  EXPECT_TRUE(qlty::detail::is_directory(dir / "photos/2024"));
  expect_fails(run({"frobnicate"}, dir.path), {"frobnicate"});
  expect_fails(run({"info", dir / "nowhere"}, dir.path), {"nowhere: no such file"});
}

TEST(Cli, HostileFilesGiveClearErrorsNeverACrashOrAHang) {
  TempDir dir;
  auto text = [&](const std::string& rel, const std::string& body) {
    qlty::detail::make_dirs(qlty::detail::parent_path(dir / rel));
    std::ofstream(dir / rel) << body;
  };
  // NGFF attributes and manifests with missing keys (a SIGSEGV, a heap overflow, a use-after-free before).
  for (const std::string g : {"g1", "g2", "g3", "o1", "o2"}) text(g + "/.zgroup", "{\"zarr_format\": 2}");
  text("g1/.zattrs", "{\"multiscales\": []}");
  text("g2/.zattrs", "{\"multiscales\": [{}]}");
  text("g3/.zattrs", "{\"multiscales\": [{\"axes\": [{\"name\": 3}]}]}");
  text("o1/.qlty/manifest.json", "{\"layout\": {}}");
  text("o2/.qlty/manifest.json",
       "{\"format\": \"qlty.blockwise/1\", \"hash\": \"0\", \"layout\": {\"input_shape\": \"x\"}, \"out_channels\": 1, "
       "\"blocks_total\": 1}");
  expect_fails(run({"info", dir / "g1"}, dir.path), {"[qlty.zarr.format]", "g1/.zattrs", "multiscales must be"});
  expect_fails(run({"info", dir / "g2"}, dir.path), {"[qlty.zarr.format]", "g2/.zattrs", "missing key \"axes\""});
  expect_fails(run({"info", dir / "g3"}, dir.path), {"[qlty.zarr.format]", "g3/.zattrs", "must be a string, got 3"});
  expect_fails(run({"info", dir / "o1"}, dir.path), {"[qlty.zarr.format]", "manifest.json", "missing key \"format\""});
  expect_fails(run({"info", dir / "o2"}, dir.path),
               {"[qlty.zarr.format]", "manifest.json", "layout.input_shape must be a list of integers"});
  write_npy_by_hand(dir / "img.npy", torch::randn({8, 8}), "<f4");
  expect_fails(run({"infer", "-i", dir / "img.npy", "-o", dir / "o1", "-w", "4"}, dir.path),
               {"[qlty.zarr.format]", "manifest.json", "missing key \"format\""});
  // Deep nesting and an overflowing shape: clear errors from info and convert (a stack overflow, a negative
  // count and gigabytes of memory before).
  text("deep.zarr/.zarray",
       "{\"zarr_format\": 2, \"dtype\": " + std::string(100000, '[') + std::string(100000, ']') + "}");
  expect_fails(run({"info", dir / "deep.zarr"}, dir.path), {"deep.zarr/.zarray", "nested deeper than 64 levels"});
  text("big.zarr/.zarray",
       "{\"zarr_format\": 2, \"shape\": [9223372036854775807], \"chunks\": [2], \"dtype\": "
       "\"<f4\", \"compressor\": null, \"fill_value\": 0, \"order\": \"C\", \"filters\": null}");
  expect_fails(run({"info", dir / "big.zarr"}, dir.path), {"big.zarr/.zarray", "too many chunks"});
  expect_fails(run({"convert", dir / "big.zarr", dir / "big.npy"}, dir.path), {"too many chunks"});
  // An array larger than memory: convert says how large instead of growing until it is killed.
  text("huge.zarr/.zarray",
       "{\"zarr_format\": 2, \"shape\": [1099511627776], \"chunks\": [1048576], \"dtype\": "
       "\"<f4\", \"compressor\": null, \"fill_value\": 0, \"order\": \"C\", \"filters\": null}");
  expect_fails(run({"convert", dir / "huge.zarr", dir / "huge.npy"}, dir.path),
               {"huge.zarr: the array holds 4398.05 GB, more than half of this machine's memory"});
  // A FIFO as an input file: refused at once, not waited on.
  ASSERT_EQ(::mkfifo((dir / "pipe.npy").c_str(), 0644), 0);
  ASSERT_EQ(::mkfifo((dir / "pipe.tif").c_str(), 0644), 0);
  expect_fails(run({"infer", "-i", dir / "pipe.npy", "-o", dir / "p.zarr", "-w", "4"}, dir.path),
               {"pipe.npy: not a regular file"});
  expect_fails(run({"info", dir / "pipe.tif"}, dir.path), {"pipe.tif: not a regular file"});
  // Links inside an array are not followed (a link to /usr ran for minutes, `loop -> .` counted chunks again).
  qlty::zarr::Array::create(dir / "ln.zarr", qlty::zarr::ArrayOptions({4, 4}, {2, 2}))
      .write({0, 0}, torch::ones({2, 2}));
  ASSERT_EQ(::symlink(".", (dir / "ln.zarr/loop").c_str()), 0);
  ASSERT_EQ(::symlink("/usr", (dir / "ln.zarr/usr").c_str()), 0);
  ASSERT_EQ(::symlink("0.0", (dir / "ln.zarr/1.1").c_str()), 0);
  auto r = run({"info", dir / "ln.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 of 4 chunks stored"), std::string::npos) << r.out;  // 0.0, and 1.1 linking to it
  // .npy headers with absurd shapes name the file and the problem.
  auto npy_header = [&](const std::string& name, const std::string& shape) {
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
    h.append(63 - (10 + h.size()) % 64, ' ');
    h += "\n";
    std::ofstream f(dir / name, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(h.size() & 0xff), static_cast<char>(h.size() >> 8)};
    f.write(len, 2);
    f << h << "0123456789abcdef";
  };
  npy_header("long.npy", "12345678901234567890123, 2");
  npy_header("over.npy", "4294967296, 4294967296, 4");
  expect_fails(run({"info", dir / "long.npy"}, dir.path),
               {"long.npy", "shape entry 12345678901234567890123 is too large"});
  expect_fails(run({"info", dir / "over.npy"}, dir.path), {"over.npy", "more elements than 64 bits can count"});
  for (const char* f : {"long.npy", "over.npy"})
    EXPECT_EQ(run({"info", dir / f}, dir.path).err.find("stoll"), std::string::npos);
}

TEST(Cli, ProgressBarOnATerminal) {
  TempDir dir;
  write_npy_by_hand(dir / "img.npy", torch::randn({64, 64}), "<f4");
  // script(1) (util-linux) gives the program a pseudo-terminal and records what it draws.
  const std::string cmd = "script -qec '" + std::string(QLTY_CLI) + " infer -i " + (dir / "img.npy") + " -o " +
                          (dir / "out.zarr") + " -w 16 --chunks 16 --block 16' " + (dir / "typescript") +
                          " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(dir / "typescript");
  const std::string screen = slurp(dir / "typescript");
  for (const char* part :
       {"\r  0% |", "100% |##############################|", "windows/s, ETA", "blocks 16/16", "qlty infer: wrote"})
    EXPECT_NE(screen.find(part), std::string::npos) << part << " not in " << screen;
}

TEST(Cli, WhatMonaiAndNnUNetUsersExpect) {
  TempDir dir;
  const std::string model3 = dir / "m3.pt", model2 = dir / "m2.pt";
  qlty_test::conv_model(3, 1, 2, model3);
  qlty_test::conv_model(2, 1, 2, model2);
  torch::manual_seed(31);
  auto vol = torch::randn({18, 26, 21});
  write_npy_by_hand(dir / "vol.npy", vol, "<f4");
  auto x = vol.view({1, 1, 18, 26, 21});
  auto m3 = torch::jit::load(model3);
  auto net = [&m3](const torch::Tensor& t) { return m3.forward({t}).toTensor(); };

  // --blend gaussian with MONAI's overlap: step int(12 * (1 - 0.3)) = 8; no lock files left after a clean run
  auto r = run({"infer", "-m", model3, "-i", dir / "vol.npy", "-o", dir / "g.zarr", "-w", "12", "--overlap", "0.3",
                "--blend", "gaussian", "--block", "8", "--chunks", "8"},
               dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  {
    torch::NoGradGuard no_grad;
    qlty::NCZYXQuilt q(18, 26, 21, 12, 8, qlty::Blend::gaussian());
    auto ref = std::get<0>(q.stitch(net(q.unstitch(x))));
    EXPECT_LT((read_output(dir / "g.zarr") - ref).abs().max().item<double>(), 2e-6);
  }
  for (const char* lock : {"/.qlty/lock", "/.0.lock"})
    EXPECT_FALSE(qlty::detail::path_exists(dir / "g.zarr" + lock)) << lock;
  // bfloat16 on the CPU: the model's parameters and the windows in bfloat16, the result float32 to that precision
  r = run({"infer", "-m", model3, "-i", dir / "vol.npy", "-o", dir / "bf16.zarr", "-w", "12", "--overlap", "0.3",
           "--blend", "gaussian", "--precision", "bfloat16"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  {
    auto bf = read_output(dir / "bf16.zarr"), f32 = read_output(dir / "g.zarr");
    EXPECT_EQ(bf.scalar_type(), torch::kFloat);
    const double diff = (bf - f32).abs().max().item<double>();
    EXPECT_LT(diff, 0.05);
    EXPECT_GT(diff, 0.0);  // it did run in bfloat16
  }
  r = run({"info", dir / "g.zarr"}, dir.path);
  EXPECT_NE(r.out.find("step [8,8,8]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("also: blend \"gaussian(0.125, 0.125, 0.125)\""), std::string::npos) << r.out;
  // a rerun with other settings says what differs and how to start over
  expect_fails(run({"infer", "-m", model3, "-i", dir / "vol.npy", "-o", dir / "g.zarr", "-w", "12", "--overlap", "0.3",
                    "--blend", "constant", "--block", "8", "--chunks", "8"},
                   dir.path),
               {"[qlty.checkpoint]", "--blend/--sigma-scale: \"gaussian(0.125, 0.125, 0.125)\" there, \"constant\" now",
                "--overwrite to start over"});

  // a volume thinner than the window along Z is padded (constant 0 by default) and cropped back; --tta flip; softmax
  auto thin = torch::randn({1, 5, 20, 17});  // MONAI's (C, Z, Y, X)
  write_npy_by_hand(dir / "thin.npy", thin, "<f4");
  r = run({"infer",   "-m",   model3, "-i", dir / "thin.npy", "--axes", "czyx",       "-o", dir / "thin.zarr",
           "-w",      "8",    "-s",   "6",  "--tta",          "flip",   "--tta-axes", "yx", "--activation",
           "softmax", "--std"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  {
    torch::NoGradGuard no_grad;
    qlty::NCZYXQuilt q(5, 20, 17, 8, 6, qlty::Blend::border(), qlty::Pad::constant(0));
    auto p = q.unstitch(thin.unsqueeze(0));
    torch::Tensor sum;
    for (const std::vector<int64_t>& dims : {std::vector<int64_t>{}, {3}, {4}, {3, 4}}) {
      auto y = dims.empty() ? net(p) : net(p.flip(dims)).flip(dims);
      sum = sum.defined() ? sum + y : y;
    }
    auto ref = std::get<0>(q.stitch(sum / 4)).softmax(1);
    auto got = read_output(dir / "thin.zarr");
    ASSERT_EQ(got.sizes(), c10::IntArrayRef({1, 2, 5, 20, 17}));
    EXPECT_LT((got - ref).abs().max().item<double>(), 2e-6);
  }
  // slicewise: a 2D model over a volume, its windows of depth 1
  r = run(
      {"infer", "-m", model2, "-i", dir / "vol.npy", "-o", dir / "slices.zarr", "-w", "10", "--slicewise", "-s", "7"},
      dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  {
    torch::NoGradGuard no_grad;
    auto m2 = torch::jit::load(model2);
    qlty::NCYXQuilt q(26, 21, 10, 7);
    auto ref = std::get<0>(q.stitch(m2.forward({q.unstitch(vol.unsqueeze(1))}).toTensor()));
    EXPECT_LT((read_output(dir / "slices.zarr") - ref.permute({1, 0, 2, 3}).unsqueeze(0)).abs().max().item<double>(),
              2e-6);
  }
  r = run({"infer", "-m", model2, "-i", dir / "vol.npy", "-o", dir / "slices2.zarr", "-w", "10,10", "--slicewise", "-s",
           "7,7"},
          dir.path);  // the window and step of the slices, given as 2D
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(torch::equal(read_output(dir / "slices2.zarr"), read_output(dir / "slices.zarr")));
  // models returning a tuple (deep supervision), a dict (with --output-key), and errors for the rest
  qlty_test::script_model("    return (x * 2.0, x[:, :, ::2])", dir / "tuple.pt");
  qlty_test::script_model("    return {'aux': x * 3.0, 'seg': x * 2.0}", dir / "dict.pt");
  qlty_test::script_model("    return [x * 2.0]", dir / "list.pt");
  for (const auto& [model, key] :
       std::vector<std::pair<std::string, std::string>>{{"tuple.pt", ""}, {"dict.pt", "seg"}, {"list.pt", ""}}) {
    std::vector<std::string> args = {
        "infer", "-m", dir / model, "-i",       dir / "vol.npy", "-o", dir / (model + ".zarr"),
        "-w",    "12", "--blend",   "constant", "--quiet"};
    if (!key.empty()) args.insert(args.end(), {"--output-key", key});
    r = run(args, dir.path);
    ASSERT_EQ(r.code, 0) << model << r.out << r.err;
    EXPECT_LT((read_output(dir / (model + ".zarr")) - x * 2).abs().max().item<double>(), 1e-5) << model;
  }
  expect_fails(run({"infer", "-m", dir / "dict.pt", "-i", dir / "vol.npy", "-o", dir / "k.zarr", "-w", "12",
                    "--output-key", "logits"},
                   dir.path),
               {"[qlty.model]", "without the key \"logits\"", "keys: aux, seg"});
  expect_fails(run({"infer", "-m", dir / "tuple.pt", "-i", dir / "vol.npy", "-o", dir / "k.zarr", "-w", "12",
                    "--output-key", "seg"},
                   dir.path),
               {"[qlty.model]", "output key \"seg\" was given, but the model returns a tuple"});
  // a model that raises: its message, never a C++ backtrace
  qlty_test::script_model("    assert x.size(0) < 0, 'no windows today'\n    return x", dir / "raises.pt");
  r = run({"infer", "-m", dir / "raises.pt", "-i", dir / "vol.npy", "-o", dir / "k.zarr", "-w", "12"}, dir.path);
  expect_fails(r, {"[qlty.model]", "the model failed on the first window", "no windows today"});
  EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
  // a model written by torch.save: the message says how to export one
  {
    auto bytes = torch::pickle_save(c10::IValue(torch::ones({2})));
    std::ofstream(dir / "saved.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  expect_fails(
      run({"infer", "-m", dir / "saved.pt", "-i", dir / "vol.npy", "-o", dir / "k.zarr", "-w", "12"}, dir.path),
      {"[qlty.model]", "written by torch.save", "torch.jit.save"});
  // a 4D (C, Z, Y, X) input read as (N, C, Y, X) fails in the model; the message says which axes were assumed
  write_npy_by_hand(dir / "czyx.npy", torch::randn({1, 6, 20, 20}), "<f4");
  expect_fails(run({"infer", "-m", model3, "-i", dir / "czyx.npy", "-o", dir / "k.zarr", "-w", "8"}, dir.path),
               {"[qlty.model]", "with axes \"ncyx\", the default for its rank; pass --axes"});
  // every new bad argument: a clear message, a non-zero exit, no output
  const std::string v = dir / "vol.npy";
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--overlap", "1.0"}, "--overlap: must be in [0, 1)"},
      {{"--overlap", "0.5", "-s", "4"}, "give either --step or --overlap"},
      {{"--overlap", "0.1,0.2"}, "--overlap: expected 1 or 3 values"},
      {{"--sigma-scale", "0.2"}, "--sigma-scale: is for --blend gaussian"},
      {{"--blend", "gaussian", "--sigma-scale", "0"}, "--sigma-scale: must be > 0"},
      {{"--blend", "custom"}, "custom needs --blend-window"},
      {{"--blend", "hann"}, "--blend"},
      {{"--blend", "gaussian", "-b", "2"}, "--border: weights windows with --blend border"},
      {{"--pad", "reflect", "--pad-value", "1"}, "--pad-value: is for --pad constant"},
      {{"--pad", "mirror"}, "--pad"},
      {{"--tta-axes", "yx"}, "--tta-axes: is for --tta flip"},
      {{"--tta", "flip", "--tta-axes", "q"}, "--tta-axes: expected letters of zyx"},
      {{"--precision", "float64"}, "--precision"},
      {{"--output-dtype", "int8"}, "--output-dtype"},
      {{"--activation", "relu"}, "--activation"},
      {{"--axes", "zyxq"}, "--axes"},
      {{"--axes", "yx"}, "--axes: \"yx\" names 2 axes"},
      {{"--axes", "zzx"}, "expected distinct letters"},
      {{"--slicewise", "-w", "4,12,12"},
       "--slicewise: qlty::infer_blockwise: slicewise runs a 2D model over a 3D input with windows of depth 1"},
      // the library's own checks, in the words of the flags
      {{"-w", "0"}, "--window: qlty infer: window along Z must be >= 1, got 0"},
      {{"-b", "6"},
       "--border: qlty::infer_blockwise: border along Z must leave an interior (2 * border < window = 12)"},
      {{"--border-weight", "2"}, "--border-weight: qlty::infer_blockwise: border_weight must be in [0, 1], got 2"},
      {{"-s", "20"}, "--step: the step [20, 20, 20] exceeds the window [12, 12, 12]"}};
  for (const auto& [extra, want] : bad) {
    std::vector<std::string> args = {"infer", "-i", v, "-o", dir / "bad.zarr"};
    if (std::find(extra.begin(), extra.end(), "-w") == extra.end()) args.insert(args.end(), {"-w", "12"});
    args.insert(args.end(), extra.begin(), extra.end());
    SCOPED_TRACE(want);
    expect_fails(run(args, dir.path), {want});
    EXPECT_FALSE(qlty::detail::path_exists(dir / "bad.zarr"));
  }
  // --blend custom with a window from a .npy file equals the quilt with that window
  auto hann = torch::hann_window(14, false).narrow(0, 1, 12);
  auto w3 = hann.view({12, 1, 1}) * hann.view({1, 12, 1}) * hann.view({1, 1, 12});
  write_npy_by_hand(dir / "hann.npy", w3, "<f4");
  r = run({"infer", "-m", model3, "-i", v, "-o", dir / "hann.zarr", "-w", "12", "-s", "6", "--blend", "custom",
           "--blend-window", dir / "hann.npy", "--output-dtype", "float16"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  {
    torch::NoGradGuard no_grad;
    qlty::NCZYXQuilt q(18, 26, 21, 12, 6, qlty::Blend::custom(w3));
    auto ref = std::get<0>(q.stitch(net(q.unstitch(x))));
    auto got = read_output(dir / "hann.zarr");
    EXPECT_EQ(got.scalar_type(), torch::kHalf);
    EXPECT_LT((got.to(torch::kFloat) - ref).abs().max().item<double>(), 2e-3);
  }
  // convert takes what infer writes (the OME-Zarr group: its first scale) and prints the shape plainly
  r = run({"convert", dir / "g.zarr", dir / "g.npy"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(": 1 x 2 x 18 x 26 x 21, float32"), std::string::npos) << r.out;
  EXPECT_TRUE(torch::equal(qlty::tool::open_npy(dir / "g.npy").read({0, 0, 0, 0, 0}, {1, 2, 18, 26, 21}),
                           read_output(dir / "g.zarr")));
}

#if QLTY_HAS_UNSIGNED_DTYPES
// uint16/32/64 volumes (LibTorch 2.3+) as themselves through .npy, Zarr and TIFF, range edges included, and as
// inputs of qlty infer: the same prediction as their values in float32.
TEST(Cli, UnsignedVolumesConvertAsThemselvesAndInfer) {
  TempDir dir;
  torch::manual_seed(9);
  // the same bits as a signed tensor of the element size: torch::equal on unsigned dtypes is not everywhere
  auto bits = [](const torch::Tensor& t) {
    const auto s = t.element_size() == 2 ? torch::kShort : t.element_size() == 4 ? torch::kInt : torch::kLong;
    return t.contiguous().view(s);
  };
  struct Case {
    const char* descr;
    qlty::zarr::DataType type;
    int64_t top;  // the largest value's bits as int64 (2^64 - 1: -1)
  };
  for (const auto& c :
       {Case{"<u2", qlty::zarr::DataType::UInt16, 65535}, Case{"<u4", qlty::zarr::DataType::UInt32, 4294967295},
        Case{"<u8", qlty::zarr::DataType::UInt64, -1}}) {
    const auto dtype = qlty::zarr::scalar_type(c.type);
    const std::string n = qlty::zarr::name(c.type);
    auto values = torch::randint(0, 60000, {6, 7, 8}, torch::kLong);
    values[0][0][0] = c.top, values[5][6][7] = c.top - 1, values[2][3][4] = 0;
    const auto vol = c.type == qlty::zarr::DataType::UInt64 ? values.view(dtype) : values.to(dtype);
    write_npy_by_hand(dir / (n + ".npy"), vol, c.descr);
    auto r = run({"convert", dir / (n + ".npy"), dir / (n + ".zarr")}, dir.path);
    ASSERT_EQ(r.code, 0) << r.err;
    auto z = qlty::zarr::Array::open(dir / (n + ".zarr"));
    EXPECT_EQ(z.dtype(), c.type) << n;
    EXPECT_TRUE(torch::equal(bits(z.read()), bits(vol))) << n;
    r = run({"info", dir / (n + ".zarr")}, dir.path);
    EXPECT_NE(r.out.find("shape [6, 7, 8], chunks"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(", " + n + ", codecs"), std::string::npos) << r.out;
    r = run({"convert", dir / (n + ".zarr"), dir / (n + ".tif")}, dir.path);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto tif = qlty::tool::read_tiff(dir / (n + ".tif"));
    EXPECT_EQ(tif.scalar_type(), dtype) << n;
    EXPECT_TRUE(torch::equal(bits(tif), bits(vol))) << n;
    r = run({"convert", dir / (n + ".tif"), dir / (n + ".back.npy")}, dir.path);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(slurp(dir / (n + ".back.npy")).find(std::string("'descr': '") + c.descr), std::string::npos) << n;
    const auto back = qlty::tool::open_npy(dir / (n + ".back.npy")).read({0, 0, 0, 0, 0}, {1, 1, 6, 7, 8});
    EXPECT_TRUE(torch::equal(bits(back).view({6, 7, 8}), bits(vol))) << n;
    // qlty infer reads them as their values (in float32, as every input)
    write_npy_by_hand(dir / (n + ".f32.npy"), vol.to(torch::kFloat), "<f4");
    for (const std::string in : {n + ".npy", n + ".f32.npy"}) {
      r = run({"infer", "-i", dir / in, "-o", dir / (in + ".out.zarr"), "-w", "4", "--quiet"}, dir.path);
      ASSERT_EQ(r.code, 0) << in << r.out << r.err;
    }
    const auto got = read_output(dir / (n + ".npy.out.zarr")), want = read_output(dir / (n + ".f32.npy.out.zarr"));
    EXPECT_TRUE(torch::allclose(got, want, 0, 0, /*equal_nan=*/true)) << n;
  }
}
#endif

TEST(Cli, ConvertRoundTripsAndDemoChecksItself) {
  TempDir dir;
  auto vol = torch::randint(0, 60000, {9, 11, 13}, torch::kInt);
  write_npy_by_hand(dir / "v.npy", vol.to(torch::kShort), "<u2");
  auto r = run({"convert", dir / "v.npy", dir / "v.zarr", "--chunks", "4", "--codec", "zstd"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  auto z = qlty::zarr::Array::open(dir / "v.zarr");
  EXPECT_EQ(z.chunks(), (std::vector<int64_t>{4, 4, 4}));
  EXPECT_TRUE(torch::equal(z.read().to(torch::kInt), vol));  // uint16 as itself from LibTorch 2.3, else int32
  r = run({"convert", dir / "v.zarr", dir / "v.tif"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::equal(qlty::tool::read_tiff(dir / "v.tif").to(torch::kInt), vol));
  r = run({"convert", dir / "v.tif", dir / "back.npy"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::equal(
      qlty::tool::open_npy(dir / "back.npy").read({0, 0, 0, 0, 0}, {1, 1, 9, 11, 13}).view({9, 11, 13}).to(torch::kInt),
      vol));
  expect_fails(run({"convert", dir / "v.tif", dir / "v.zarr"}, dir.path), {"v.zarr: exists", "--overwrite"});
  r = run({"info", dir / "v.tif"}, dir.path);
  const std::string read_as = QLTY_HAS_UNSIGNED_DTYPES ? "UInt16" : "Int";  // uint16 as itself from LibTorch 2.3
  EXPECT_NE(r.out.find("TIFF, as (N, C, Z, Y, X) [1, 1, 9, 11, 13], " + read_as), std::string::npos) << r.out;

  r = run({"demo", "-o", dir / "demo", "--size", "40", "--window", "20", "--step", "14", "--border", "3", "--block",
           "16", "--quiet"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("interior max |difference|"), std::string::npos) << r.out;
  EXPECT_EQ(slurp(dir / "demo/preview.png").substr(1, 3), "PNG");
}

}  // namespace

// The preview: a spread that is zero except where windows meet shows its seams (not a black panel), every panel is
// labelled with its name and the range shown, and 128-pixel planes are enlarged to be read.
TEST(Cli, PreviewPanelsAreVisibleLabelledAndLarge) {
  auto input = torch::linspace(0, 1, 128 * 128).view({128, 128});
  auto spread = torch::zeros({128, 128});
  spread.narrow(0, 0, 20).narrow(1, 40, 1).fill_(0.063f);  // a seam of 20 pixels: 0.1% of the panel
  spread[100][5] = 1e-4f;
  auto strip = qlty::tool::preview_strip({{"input", input}, {"std c0", spread}});
  const int64_t band = 2 * 7 * 2 + 3 * 4;
  ASSERT_EQ(strip.size(0), band + 256);        // enlarged twice
  const int64_t second = strip.size(1) - 256;  // where the second panel starts
  auto seam = strip.narrow(0, band, 40).narrow(1, second + 80, 2);
  EXPECT_EQ(seam.min().item<float>(), 255.0f);                                                   // the seam is white
  EXPECT_EQ(strip.narrow(0, band, 256).narrow(1, second + 100, 100).max().item<float>(), 0.0f);  // the rest black
  // labels: lit pixels in each panel's band
  EXPECT_GT(strip.narrow(0, 0, band).narrow(1, 0, 200).gt(0).sum().item<int64_t>(), 50);
  EXPECT_GT(strip.narrow(0, 0, band).narrow(1, second, 200).gt(0).sum().item<int64_t>(), 50);
  // the input's ramp covers the whole grey range
  auto first = strip.narrow(0, band, 256).narrow(1, 0, 256);
  EXPECT_LE(first.min().item<float>(), 2.0f);
  EXPECT_GE(first.max().item<float>(), 253.0f);
}
