// xbar/core/dist.h — the processes of one run: a single process, or the ranks of an MPI launch.
//
// `mpirun -np N xbar faults ...` starts N processes; Init() sees the launcher's environment and
// joins them into one world (OpenMPI, `libopenmpi-dev`). Without a launcher, or in a build without
// MPI, the world is this one process and every call below is the identity. Only this module
// includes <mpi.h>.
//
//   dist::Init(&argc, &argv);                       // main(), before anything else
//   dist::Agree([&] { cfg = Load(...); Check(cfg); });  // every rank throws the same error, or none
//   std::vector<double> all = dist::AllGather(mine);    // every rank's values, in rank order
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace xbar::dist {

// Joins the MPI world when launched by mpirun/srun (environment of OpenMPI, PMI or PMIx); a no-op
// otherwise. Throws ConfigError when launched with several ranks by a build without MPI (each rank
// would run the whole job and write the same files).
void Init(int* argc, char*** argv);
// Leaves the world (main(), on every normal exit). Safe to call when Init did nothing.
void Finalize();
// This process's rank (0 when alone) and the number of ranks (1 when alone).
int Rank();
int Size();
// Whether this build can join an MPI world (it was compiled against MPI).
bool Available();

// Runs `step` on every rank. If it throws on any rank, every rank throws the error of the lowest
// failing rank (same kind and message, prefixed with "rank R: " when R != 0) and marks it shared,
// so main() prints it once (rank 0) and every rank exits cleanly with its code.
void Agree(const std::function<void()>& step);
// Whether the error in flight was thrown by Agree on every rank (main() then prints it on rank 0
// only and exits; any other error on one rank aborts the whole world).
bool ErrorIsShared();
// Checks that every rank computed the same `hash` of its inputs (config, input files); if not,
// every rank throws a shared ConfigError naming the first rank that differs from rank 0 and `what`.
void CheckSame(uint64_t hash, const std::string& what);
// Every rank's `mine` concatenated in rank order (lengths may differ between ranks).
std::vector<double> AllGather(const std::vector<double>& mine);
// Every rank's value, in rank order.
std::vector<uint64_t> AllGather(uint64_t mine);
// Rank 0's `text` on every rank.
std::string Broadcast(const std::string& text);
// Ends every rank of the world with `code` (an error on one rank that the others cannot know of).
[[noreturn]] void Abort(int code);

}  // namespace xbar::dist
