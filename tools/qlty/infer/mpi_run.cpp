// `mpirun -n K qlty infer ...` (built only with MPI: QLTY_WITH_MPI).
#include <qlty/mpi.hpp>

#include "../launcher.hpp"
#include "model.hpp"
#include "report.hpp"
#include "run.hpp"

#include <chrono>
#include <thread>

namespace qlty::tool {

/// `mpirun -n K qlty infer ...` (or srun): the ranks share the blocks (qlty/mpi.hpp). Each rank takes the GPU of
/// its local rank with `--device cuda`, and the cores it may use (shared with the other ranks on its node when the
/// launcher did not bind them). An error on a rank prints that rank's message and ends every rank (MPI_Abort).
int run_infer_mpi(const InferArgs& a, const BlockInput& input, BlockwiseOptions o) {
  int provided = 0, rank = 0, ranks = 1;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  auto fail = [&](const std::string& what, int code) {
    std::fprintf(stderr, "qlty: error: rank %d of %d: %s\n", rank, ranks, what.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    return code;
  };
  try {
    const int local_ranks = qlty::mpi::local_rank().second;
    at::set_num_threads(static_cast<int>(a.threads > 0 ? a.threads : default_threads(local_ranks)));
    o.device = qlty::mpi::rank_device(o.device);
    LoadedModel model;
    load_model(a.model, o.slicewise ? 2 : input.spatial_dims(), o.device, model, o.precision, a.output_key);
    o.model_id = model.id;
    ProgressBar bar(!a.quiet && rank == 0, true);
    o.progress = [&bar](const qlty::BlockwiseProgress& p) { bar(p); };
    qlty::mpi::DistributedSummary s;
    try {
      s = qlty::mpi::infer_blockwise(model.fn, input, a.output, o);
    } catch (const qlty::Error& e) {
      if (e.tag() == "mpi.peer") throw;
      explain(e, a, &input);
    }
    bar.finish();
    if (rank == 0) {
      if (!a.preview.empty() && s.total.complete) write_preview(a.preview, input, a.output, a.std);
      if (!a.quiet) {
        print_summary(a, input, s.total, o);
        for (const auto& r : s.ranks)
          std::printf(
              "qlty infer: rank %d: %lld blocks, %lld windows computed, %lld taken from other ranks, %.2f s (%.2f s "
              "in the model)\n",
              r.rank, static_cast<long long>(r.blocks_computed), static_cast<long long>(r.windows_computed),
              static_cast<long long>(r.windows_received), r.seconds, r.model_seconds);
      }
    }
  } catch (const qlty::Error& e) {
    if (e.tag() == "mpi.peer") {  // the failing rank prints its message and ends the run; wait for it
      std::this_thread::sleep_for(std::chrono::seconds(20));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return fail(e.what(), 1);
  } catch (const CLI::Error& e) {
    return fail(e.get_name() + ": " + e.what(), 2);
  } catch (const ArgumentError& e) {
    return fail("ValidationError: " + flag_of_setting(e.field()) + ": " + e.what_without_backtrace(), 2);
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace(), 2);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  std::fflush(stdout);
  MPI_Finalize();
  return 0;
}

}  // namespace qlty::tool
