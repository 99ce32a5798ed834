#include "xbar/core/dist.h"

#include <cstdlib>
#include <exception>

#include "xbar/core/error.h"

#ifdef XBAR_HAVE_MPI
#include <mpi.h>
#endif

namespace xbar::dist {
namespace {

int g_rank = 0;
int g_size = 1;
[[maybe_unused]] bool g_joined = false;
bool g_shared_error = false;

// The rank count an MPI launcher announces in the environment (0: not launched by one).
int LauncherSize() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return std::getenv("PMIX_RANK") != nullptr ? 1 : 0;
}

#ifdef XBAR_HAVE_MPI
std::string BroadcastFrom(const std::string& text, int root) {
  uint64_t n = text.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD);
  std::string out = g_rank == root ? text : std::string(n, '\0');
  if (n > 0) MPI_Bcast(out.data(), static_cast<int>(n), MPI_CHAR, root, MPI_COMM_WORLD);
  return out;
}
#endif

}  // namespace

bool Available() {
#ifdef XBAR_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void Init(int* argc, char*** argv) {
  const int launched = LauncherSize();
  if (launched == 0) return;
#ifdef XBAR_HAVE_MPI
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw ConfigError("MPI_Init_thread failed: this process was started by an MPI launcher but could not join its world");
  }
  g_joined = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  if (launched > 1) {
    throw ConfigError(StrCat("launched as one of ", launched,
                             " MPI ranks, but this xbar was built without MPI (install libopenmpi-dev and rebuild); "
                             "run it without mpirun"));
  }
#endif
}

void Finalize() {
#ifdef XBAR_HAVE_MPI
  if (g_joined) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
    g_joined = false;
  }
#endif
}

int Rank() { return g_rank; }
int Size() { return g_size; }
bool ErrorIsShared() { return g_shared_error; }

void Agree(const std::function<void()>& step) {
  g_shared_error = false;
  if (g_size == 1) {
    step();
    return;
  }
#ifdef XBAR_HAVE_MPI
  int kind = 0;
  std::string message;
  try {
    step();
  } catch (const Error& e) {
    kind = e.exit_code();
    message = e.what();
  } catch (const std::exception& e) {
    kind = static_cast<int>(ErrorKind::kInternal);
    message = e.what();
  }
  std::vector<int> kinds(g_size);
  MPI_Allgather(&kind, 1, MPI_INT, kinds.data(), 1, MPI_INT, MPI_COMM_WORLD);
  for (int r = 0; r < g_size; ++r) {
    if (kinds[r] == 0) continue;
    std::string m = BroadcastFrom(message, r);
    if (r != 0) m = StrCat("rank ", r, ": ", m);
    g_shared_error = true;
    throw Error(static_cast<ErrorKind>(kinds[r]), m);
  }
#endif
}

void CheckSame(uint64_t hash, const std::string& what) {
  g_shared_error = false;
  const std::vector<uint64_t> all = AllGather(hash);
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    g_shared_error = true;
    throw ConfigError(StrCat("MPI rank ", r, " disagrees with rank 0 on ", what, " (hash ", std::hex, all[r], " vs ",
                             all[0], "); start every rank with the same command and files"));
  }
}

std::vector<double> AllGather(const std::vector<double>& mine) {
  if (g_size == 1) return mine;
  std::vector<double> all;
#ifdef XBAR_HAVE_MPI
  const int n = static_cast<int>(mine.size());
  std::vector<int> counts(g_size), offsets(g_size, 0);
  MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  for (int r = 1; r < g_size; ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
  all.resize(static_cast<size_t>(offsets.back() + counts.back()));
  MPI_Allgatherv(mine.data(), n, MPI_DOUBLE, all.data(), counts.data(), offsets.data(), MPI_DOUBLE, MPI_COMM_WORLD);
#endif
  return all;
}

std::vector<uint64_t> AllGather(uint64_t mine) {
  if (g_size == 1) return {mine};
  std::vector<uint64_t> all(g_size);
#ifdef XBAR_HAVE_MPI
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
#endif
  return all;
}

std::string Broadcast(const std::string& text) {
  if (g_size == 1) return text;
#ifdef XBAR_HAVE_MPI
  return BroadcastFrom(text, 0);
#else
  return text;
#endif
}

void Abort(int code) {
#ifdef XBAR_HAVE_MPI
  if (g_joined) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

}  // namespace xbar::dist
