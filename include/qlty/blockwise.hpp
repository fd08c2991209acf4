#pragma once
/// @file blockwise.hpp
/// @brief Sliding-window inference over whole images and volumes that need not fit in memory: `infer_blockwise`
/// runs a model over every window of an input and writes the blended result to an OME-Zarr group, block by block,
/// resumably.
///
/// The output is split into blocks of whole chunks. Each block is computed by one owner: every window that
/// touches the block is run through the model (in batches, on the model's device), blended into the block's
/// accumulators in memory, and the block's chunks are written once, whole, atomically; then a done marker is
/// written. Only one block (plus the input halo its windows read) is in memory. Rerunning the same call skips the
/// blocks marked done; a manifest with a hash of the layout refuses a resume with other settings.
///
/// Blocks are slabs along the outermost spatial axis (Z, or Y for 2D) when memory allows. Windows that straddle
/// the edge between two consecutive slabs are computed once: their predictions for the next slab are carried
/// over. Every pixel sums its windows in the global window order, so the result equals the in-memory quilt's
/// stitch of the same windows (to float rounding) whatever the block size; and windows are batched by window
/// row within a block, so a resumed run writes the same bytes as an uninterrupted one.
///
/// Output folder OUT:
/// - `OUT/0`: the blended prediction (N, C', *S) float32; `OUT/.zattrs` holds NGFF 0.4 `multiscales` metadata
///   (axes t, c, [z,] y, x: NGFF 0.4 has no other slot for the image axis N than "time").
/// - `OUT/std`: with `write_std`, the spread of the overlapping predictions, sqrt(E[x^2] - E[x]^2) (weighted).
/// - `OUT/labels/argmax/0`: with `write_argmax`, the channel of the largest blended prediction per pixel
///   (N, 1, *S), an NGFF label image.
/// - `OUT/.qlty/manifest.json` (the layout and its hash) and `OUT/.qlty/done/<block>` (one empty file per block).
///
/// Many processes: `BlockwiseOptions::part` computes a deterministic share of the blocks (job arrays, processes on
/// shared storage); `qlty/mpi.hpp` shares the blocks dynamically among the ranks of an MPI communicator. Either way
/// the bytes equal one process's. The pieces, each usable on its own, are in `detail/`: the plan
/// (`blockwise_plan.hpp`), the output (`blockwise_output.hpp`) and the block executor (`blockwise_executor.hpp`).

#include <qlty/blockwise/executor.hpp>
#include <qlty/blockwise/output.hpp>
#include <qlty/blockwise/plan.hpp>
#include <qlty/blockwise_types.hpp>
#include <qlty/error.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace qlty {

/// @brief The manifest, done count and parts of a blockwise output; an Error (`zarr.missing`) where there is none.
inline BlockwiseStatus blockwise_status(const std::string& output) {
  using namespace detail;
  auto m = read_manifest(output);
  if (!m) throw Error("zarr.missing", output + ": not a qlty inference output (no .qlty/manifest.json)");
  BlockwiseStatus s;
  s.manifest = *m;
  s.blocks_total = m->at("blocks_total").get<int64_t>();
  const auto plan = plan_from_manifest(*m, manifest_path(output));
  // A file name that is a number below `limit` (a marker's block id, a part count or index), or -1.
  auto number = [](const std::string& name, int64_t limit) -> int64_t {
    char* end = nullptr;
    const long long v = std::strtoll(name.c_str(), &end, 10);  // saturates: huge names are refused below
    const bool digits = !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])) && *end == 0;
    return digits && v < limit ? v : -1;
  };
  // The blocks done, in run order: the work is bounded by the files on disk, not by the blocks of the layout.
  std::vector<int64_t> done;
  for (const auto& f : list_dir_if_present(done_folder(output)).value_or(std::vector<std::string>{}))
    if (const int64_t id = number(f, plan.total()); id >= 0) done.push_back(plan.index_of_id(id));
  std::sort(done.begin(), done.end());
  done.erase(std::unique(done.begin(), done.end()), done.end());
  s.blocks_done = static_cast<int64_t>(done.size());
  auto done_in = [&done](int64_t b, int64_t e) {
    return std::lower_bound(done.begin(), done.end(), e) - std::lower_bound(done.begin(), done.end(), b);
  };
  // Parts: .qlty/parts/<K>/<i> for each part started.
  const auto counts = list_dir_if_present(parts_folder(output));
  for (const auto& k : counts.value_or(std::vector<std::string>{})) {
    const int64_t K = number(k, INT64_MAX);
    if (K < 2) continue;
    std::vector<int64_t> started;
    for (const auto& f : list_dir_if_present(join_path(parts_folder(output), k)).value_or(std::vector<std::string>{}))
      if (const int64_t p = number(f, K); p >= 0) started.push_back(p);
    std::sort(started.begin(), started.end());
    started.erase(std::unique(started.begin(), started.end()), started.end());
    auto add = [&](int64_t p) {
      BlockwisePartStatus ps;
      ps.index = p;
      ps.count = K;
      const auto [b, e] = plan.part_range(p, K);
      ps.blocks = e - b;
      ps.blocks_done = done_in(b, e);
      ps.started = std::binary_search(started.begin(), started.end(), p);
      s.parts.push_back(ps);
    };
    if (K <= BlockwiseStatus::kMostListed) {
      for (int64_t p = 0; p < K; ++p) add(p);
    } else {
      for (auto p : started) add(p);
      s.unlisted.push_back({K, K - static_cast<int64_t>(started.size())});
    }
  }
  return s;
}

/// @brief Runs `model` over every window of `input` and writes the blended result to the OME-Zarr group `output`
/// (see the file's notes). Rerunning with the same settings resumes; other settings are an Error (`checkpoint`).
/// With `options.part` = {i, K}, computes part i of K only (processes started together create the output once).
inline BlockwiseSummary infer_blockwise(const BlockModel& model, const BlockInput& input, const std::string& output,
                                        const BlockwiseOptions& options) {
  using namespace detail;
  const auto t_start = std::chrono::steady_clock::now();
  const char* who = "qlty::infer_blockwise";
  check_blockwise_options(model, output, options, who);
  const auto [part, parts] = options.part;

  BlockPlan plan = plan_grid(input.shape(), options, who);
  const auto existing = read_manifest(output);
  const bool resuming = existing && !options.overwrite;
  plan_blocks(
      plan, options,
      resuming ? existing->at("out_channels").get<int64_t>() : probe_channels(model, input, plan, options, output),
      who);
  BlockwiseOutput out(output, plan, input, options);
  out.record_part(part, parts);

  const auto [first, last] = plan.part_range(part, parts);
  ListSchedule schedule(pending_blocks(out, first, last, options.max_blocks));
  BlockwiseSummary summary;
  summary.blocks_total = plan.total();
  summary.windows_grid = plan.images * plan.grid.per_image();
  summary.out_channels = plan.out_channels;
  summary.block = plan.spatial(plan.block);
  summary.chunks = plan.spatial(plan.chunk);
  for (int64_t i = first; i < last; ++i) summary.blocks_skipped += out.is_done(i) ? 1 : 0;

  BlockwiseProgress progress;
  progress.blocks_total = plan.total();
  for (int64_t i = 0; i < plan.total(); ++i) progress.blocks_done += out.is_done(i) ? 1 : 0;
  progress.windows_planned = planned_windows(plan, schedule.blocks());
  auto report = [&] {
    if (!options.progress) return;
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    options.progress(progress);
  };
  report();
  BlockExecutor executor(model, input, plan, out, options, [&](int64_t windows, bool block_done) {
    progress.windows_done += windows;
    progress.blocks_done += block_done ? 1 : 0;
    report();
  });
  executor.run(schedule);

  summary.blocks_computed = executor.blocks_computed();
  summary.windows_computed = executor.windows_computed();
  summary.windows_received = executor.windows_received();
  summary.model_seconds = executor.model_seconds();
  summary.complete = out.finish_if_complete();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return summary;
}

}  // namespace qlty
