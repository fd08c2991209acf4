#pragma once
// Running `qlty infer` (one process, or the ranks of an MPI launcher), and the library's errors in the words of
// the command line.

#include <qlty/blockwise.hpp>
#include <qlty/error.hpp>

#include "options.hpp"

#include <string>

namespace qlty::tool {

/// Runs `qlty infer` with these flags (also what `qlty demo` runs); the exit code.
int run_infer(const InferArgs& a);

/// The flag (or what the user gave) behind a setting of the library: a key of the output's manifest, or the
/// field of an Error. One table, next to where the flags are registered (infer/command.cpp).
std::string flag_of_setting(const std::string& key);

/// A library error in the words of the program: an error about one setting names its flag (and becomes a usage
/// error), a resume with other settings lists them by flag, a model error says which axes the input was read
/// with.
[[noreturn]] void explain(const Error& e, const InferArgs& a, const BlockInput* input);
/// A setting the library refused, as a usage error of its flag.
[[noreturn]] void explain(const ArgumentError& e);

#ifdef QLTY_WITH_MPI
/// `mpirun -n K qlty infer ...` (or srun): the ranks share the blocks.
int run_infer_mpi(const InferArgs& a, const BlockInput& input, BlockwiseOptions o);
#endif

}  // namespace qlty::tool
