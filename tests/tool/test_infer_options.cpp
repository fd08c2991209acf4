// The parts of `qlty infer` on their own (tools/qlty, linked as the library qlty_tool): flags to options, parts,
// and library errors in the words of the command line.
#include "../common.hpp"

#include "formats/input.hpp"
#include "infer/options.hpp"
#include "infer/run.hpp"

namespace {

using qlty::tool::InferArgs;

/// The message of a CLI::ValidationError thrown by f ("" when none is).
template <typename F>
std::string usage_error(F&& f) {
  try {
    f();
  } catch (const CLI::ValidationError& e) {
    return e.what();
  }
  return "";
}

InferArgs args(std::vector<int64_t> window) {
  InferArgs a;
  a.output = "out.zarr";
  a.window = std::move(window);
  return a;
}

TEST(ParsePart, AcceptsIOfKAndNamesTheFlagOtherwise) {
  EXPECT_EQ(qlty::tool::parse_part("0/4"), std::make_pair(int64_t(0), int64_t(4)));
  EXPECT_EQ(qlty::tool::parse_part("99/100"), std::make_pair(int64_t(99), int64_t(100)));
  for (const char* bad : {"4/4", "-1/4", "1/0", "1", "1/2x", "a/b", "/3", "2/", ""})
    EXPECT_NE(usage_error([&] { qlty::tool::parse_part(bad); }).find("--part: expected i/K"), std::string::npos) << bad;
}

TEST(InferOptions, OverlapIsMonaisConvention) {
  auto a = args({10, 16});
  a.overlap = {0.25, 0.5};
  const auto o = qlty::tool::infer_options(a, torch::kCPU, {1, 1, 40, 40});
  EXPECT_EQ(o.window.values(), (std::vector<int64_t>{10, 16}));
  EXPECT_EQ(o.step.values(), (std::vector<int64_t>{7, 8}));  // int(10 * 0.75), int(16 * 0.5)
  a.overlap = {0.9};
  EXPECT_EQ(qlty::tool::infer_options(a, torch::kCPU, {1, 1, 40, 40}).step.values(), (std::vector<int64_t>{1, 1}));
  a = args({40, 8});
  a.overlap = {0.5};  // the window itself where it fills the axis
  EXPECT_EQ(qlty::tool::infer_options(a, torch::kCPU, {1, 1, 40, 40}).step.values(), (std::vector<int64_t>{40, 4}));
  // no --step nor --overlap: three quarters of the window (MONAI's overlap 0.25)
  EXPECT_EQ(qlty::tool::infer_options(args({40, 8}), torch::kCPU, {1, 1, 40, 40}).step.values(),
            (std::vector<int64_t>{30, 6}));
}

TEST(InferOptions, SlicewiseTakesTwoDimensionalWindows) {
  auto a = args({12, 12});
  a.slicewise = true;
  a.step = {8, 8};
  const auto o = qlty::tool::infer_options(a, torch::kCPU, {1, 1, 5, 30, 30});
  EXPECT_TRUE(o.slicewise);
  EXPECT_EQ(o.window.values(), (std::vector<int64_t>{1, 12, 12}));
  EXPECT_EQ(o.step.values(), (std::vector<int64_t>{1, 8, 8}));
  // a 2D input: the library refuses it (qlty::infer_blockwise), infer_options leaves the window as given
  EXPECT_EQ(qlty::tool::infer_options(a, torch::kCPU, {1, 1, 30, 30}).window.values(), (std::vector<int64_t>{12, 12}));
}

TEST(InferOptions, ErrorsNameTheFlag) {
  auto a = args({8, 8, 8});
  EXPECT_NE(usage_error([&] {
              qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
            }).find("--window: expected 1 or 2 values"),
            std::string::npos);
  a = args({8});
  a.step = {9};
  EXPECT_NE(usage_error([&] {
              qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
            }).find("--step: the step"),
            std::string::npos);
  a = args({8});
  a.sigma_scale = {0.2};
  EXPECT_NE(usage_error([&] {
              qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
            }).find("--sigma-scale: is for --blend gaussian"),
            std::string::npos);
  a.blend = "gaussian";
  const auto o = qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
  EXPECT_EQ(o.blend.mode(), qlty::Blend::Mode::Gaussian);
  a.part = "1/3";
  EXPECT_EQ(qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20}).part, std::make_pair(int64_t(1), int64_t(3)));
}

TEST(Explain, SettingsThatDifferAreNamedByTheirFlags) {
  const auto a = args({8});
  const qlty::Error stored(
      "checkpoint", "out.zarr: this output was written with other settings (...)",
      std::vector<qlty::Error::Mismatch>{
          {"step", "[6,6]", "[5,5]"}, {"input_axes", "\"xyz\"", "none"}, {"some_new_key", "1", "2"}});
  try {
    qlty::tool::explain(stored, a, nullptr);
    FAIL() << "explain returned";
  } catch (const qlty::Error& e) {
    EXPECT_EQ(e.tag(), "checkpoint");
    EXPECT_EQ(e.message(),
              "out.zarr: this output was written with other settings (--step/--overlap: [6,6] there, [5,5] now; "
              "--axes: \"xyz\" there, none now; some_new_key: 1 there, 2 now); rerun with the same settings to resume "
              "it, or pass --overwrite to start over");
  }
  EXPECT_EQ(qlty::tool::flag_of_setting("border_weight"), "--border-weight");
  EXPECT_EQ(qlty::tool::flag_of_setting("unknown"), "unknown");
}

TEST(Explain, TheLibrarysChecksNameTheFlag) {
  // infer_options leaves what the library checks to the library: its ArgumentError names the setting
  auto a = args({0, 8});
  try {
    qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
    FAIL() << "accepted a window of 0";
  } catch (const qlty::ArgumentError& e) {
    EXPECT_EQ(e.field(), "window");
    EXPECT_EQ(usage_error([&] { qlty::tool::explain(e); }), "--window: qlty infer: window along Y must be >= 1, got 0");
  }
  a = args({8});
  a.blend = "gaussian";
  a.sigma_scale = {1e-30};
  try {
    qlty::tool::infer_options(a, torch::kCPU, {1, 1, 20, 20});
    FAIL() << "accepted sigma_scale 1e-30";
  } catch (const qlty::ArgumentError& e) {
    EXPECT_EQ(e.field(), "sigma_scale");
    EXPECT_NE(usage_error([&] { qlty::tool::explain(e); }).find("--sigma-scale: the gaussian: sigma_scale 1e-30"),
              std::string::npos);
  }
  // and a run's settings (BlockwiseOptions) are checked by infer_blockwise, with the same fields
  qlty::BlockwiseOptions o;
  o.window = 8;
  o.overwrite = true;
  o.part = {0, 2};
  try {
    qlty::infer_blockwise([](const torch::Tensor& x) { return x; },
                          qlty::BlockInput::from_tensor(torch::zeros({1, 1, 16, 16})), "unused.zarr", o);
    FAIL() << "accepted overwrite with a part";
  } catch (const qlty::ArgumentError& e) {
    EXPECT_EQ(e.field(), "overwrite");
    EXPECT_NE(usage_error([&] { qlty::tool::explain(e); }).find("--overwrite: qlty::infer_blockwise: overwrite cannot"),
              std::string::npos);
  }
  EXPECT_FALSE(qlty::detail::path_exists("unused.zarr"));
}

TEST(Explain, AnErrorAboutOneFieldIsAUsageErrorOfItsFlag) {
  // the input's own check of --axes (formats/input.hpp), which knows no flags
  try {
    qlty::tool::as_block_input({4, 5}, nullptr, "img.npy", "id", "zyx");
    FAIL() << "accepted 3 axes for 2";
  } catch (const qlty::Error& e) {
    EXPECT_EQ(e.field(), "axes");
    EXPECT_EQ(usage_error([&] { qlty::tool::explain(e, args({8}), nullptr); }),
              "--axes: \"zyx\" names 3 axes, but img.npy has 2 (shape [4, 5])");
  }
}

}  // namespace
