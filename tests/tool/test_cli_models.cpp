// `qlty infer` with a user's own model, exported the two ways docs/usage.md shows: TorchScript and AOTInductor
// packages (.pt2). Needs PyPI's torch (QLTY_TORCH_PYTHON, the build folder's virtual environment) to export them;
// on LibTorch 1.13 a package gets a message naming the LibTorch version that loads it.

#include "cli_common.hpp"

#include <qlty/model.hpp>

#include <qlty/support/torch_compat.hpp>

#include <cstdlib>
#include <fstream>

namespace {

using qlty_cli_test::expect_fails;
using qlty_cli_test::run;

torch::Tensor read_output(const std::string& out) { return qlty::zarr::Array::open(out + "/0").read(); }

#if !QLTY_HAS_AOTI
TEST(CliModels, AotiPackageNeedsANewerLibTorch) {
  qlty_test::TempDir dir;
  std::ofstream(dir / "net.pt2") << "PK";
  qlty_cli_test::write_npy_by_hand(dir / "vol.npy", torch::rand({1, 1, 20, 20, 20}), "<f4");
  expect_fails(run({"infer", "-m", dir / "net.pt2", "-i", dir / "vol.npy", "-o", dir / "p.zarr", "-w", "8"}, dir.path),
               {"[qlty.model]", "net.pt2: an AOTInductor package", "LibTorch 2.6 or newer",
                "built with LibTorch " TORCH_VERSION, "torch.jit.save"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "p.zarr"));
}
#endif

#if QLTY_HAS_AOTI && defined(QLTY_TORCH_PYTHON)
// One export for every test below (AOTInductor compiles C++: about a minute).
class CliModels : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new qlty_test::TempDir("qlty_models");
    const std::string cmd = std::string(QLTY_TORCH_PYTHON) + " " + QLTY_EXPORT_MODELS + " " + dir_->path + " > " +
                            (*dir_ / "export.log") + " 2>&1";
    export_rc_ = std::system(cmd.c_str());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(export_rc_, 0) << qlty_cli_test::slurp(*dir_ / "export.log"); }
  static std::string at(const std::string& name) { return *dir_ / name; }

  // qlty infer with `model` over the test volume: windows of 16^3 (the packages' shape), overlapping by 6, borders
  // of 2 (where the network sees its zero padding) weighted 0.
  static qlty_cli_test::Result infer(const std::string& model, const std::string& out,
                                     std::vector<std::string> extra = {}, const std::string& window = "16") {
    std::vector<std::string> args = {"infer", "-m",      at(model),    "-i", at("vol.npy"), "-o", at(out),
                                     "-w",    window,    "-s",         "10", "-b",          "2",  "--border-weight",
                                     "0",     "--quiet", "--overwrite"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args, dir_->path);
  }

  static torch::Tensor whole() {
    auto t = torch::empty({1, 2, 40, 40, 40});
    std::ifstream(at("whole.f32"), std::ios::binary).read(static_cast<char*>(t.data_ptr()), t.nbytes());
    return t;
  }

  static qlty_test::TempDir* dir_;
  static int export_rc_;
};
qlty_test::TempDir* CliModels::dir_ = nullptr;
int CliModels::export_rc_ = -1;

TEST_F(CliModels, AotiPackagesMatchTorchScriptAndTheWholeVolume) {
  using torch::indexing::Slice;
  auto r = infer("net.pt", "script.zarr");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto script = read_output(at("script.zarr"));
  const auto ref = whole();
  const auto in = Slice(2, 38);  // away from the volume's faces, where windows see their zero padding
  EXPECT_LT((script - ref).index({Slice(), Slice(), in, in, in}).abs().max().item<double>(), 1e-5);
  // a fixed batch of 3: batches of 8 split, the last one of a row filled up; a dynamic batch: as they come
  for (const auto& [model, batch] : std::vector<std::pair<std::string, std::string>>{
           {"net_fixed3.pt2", "8"}, {"net_fixed3.pt2", "2"}, {"net_dyn.pt2", "8"}, {"net_dyn.pt2", "1"}}) {
    const std::string out = model + "." + batch + ".zarr";
    r = infer(model, out, {"--batch-size", batch});
    ASSERT_EQ(r.code, 0) << model << " --batch-size " << batch << "\n" << r.out << r.err;
    EXPECT_EQ(r.err.find("input_handles"), std::string::npos) << r.err;  // the package's checks stay quiet
    const auto got = read_output(at(out));
    EXPECT_LT((got - script).abs().max().item<double>(), 1e-5) << model << " --batch-size " << batch;
    EXPECT_LT((got - ref).index({Slice(), Slice(), in, in, in}).abs().max().item<double>(), 1e-5) << model;
  }
}

TEST_F(CliModels, AotiPackageRefusesWindowsOfAnotherShapeNamingBoth) {
  auto r = infer("net_fixed3.pt2", "w12.zarr", {}, "12");
  expect_fails(r, {"[qlty.model]", "net_fixed3.pt2: the AOTInductor package does not take windows of shape",
                   "1, 12, 12, 12] (Float)", "unmatched dim value at 2, expected: 16, but got: 12",
                   "export the model with example windows of this shape"});
  // the output-key of a dict: TorchScript only
  expect_fails(infer("net_dyn.pt2", "k.zarr", {"--output-key", "seg"}),
               {"[qlty.model]", "an output key (\"seg\")", "AOTInductor package"});
  // float16 windows to a float32 package
  expect_fails(infer("net_dyn.pt2", "h.zarr", {"--precision", "float16"}),
               {"[qlty.model]", "does not take windows", "Half", "--precision must match"});
}

TEST_F(CliModels, LibraryModelTakesEitherFormat) {
  // the library's BlockModel from qlty::Model, on a tensor input
  auto x = torch::rand({1, 1, 24, 24, 24});
  qlty::BlockwiseOptions o;
  o.window = {16, 16, 16};
  o.step = {8, 8, 8};
  o.border = {2, 2, 2};
  o.border_weight = 0.0;
  o.batch_size = 5;
  std::vector<torch::Tensor> means;
  for (const char* name : {"net.pt", "net_fixed3.pt2", "net_dyn.pt2"}) {
    const auto model = qlty::Model::load(at(name), torch::kCPU);
    EXPECT_EQ(model.format(), std::string(name).find(".pt2") != std::string::npos ? qlty::Model::Format::AOTInductor
                                                                                  : qlty::Model::Format::TorchScript);
    const std::string out = at(std::string("lib_") + name + ".zarr");
    qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), out, o);
    means.push_back(read_output(out));
  }
  EXPECT_LT((means[1] - means[0]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((means[2] - means[0]).abs().max().item<double>(), 1e-5);
}
#endif

}  // namespace
