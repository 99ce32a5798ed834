#include "xbar/core/platform.h"

#include <link.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include "xbar/core/error.h"

namespace xbar {
namespace {

std::atomic<bool> g_interrupted{false};

void OnSignal(int sig) {
  if (g_interrupted.exchange(true)) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

int FindBlas(struct dl_phdr_info* info, size_t /*size*/, void* data) {
  const char* name = info->dlpi_name;
  if (name != nullptr && std::strstr(name, "libblas.so") != nullptr) {
    *static_cast<std::string*>(data) = name;
    return 1;
  }
  return 0;
}

}  // namespace

std::string LoadedBlasLibrary() {
  std::string path;
  dl_iterate_phdr(FindBlas, &path);
  if (path.empty()) return "";
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) return path;
  std::string out(real);
  std::free(real);
  return out;
}

std::optional<std::string> SlowBlasWarning() { return SlowBlasWarningFor(LoadedBlasLibrary()); }

std::optional<std::string> SlowBlasWarningFor(const std::string& blas) {
  // Debian's reference BLAS lives in .../blas/libblas.so.3; OpenBLAS, BLIS and MKL elsewhere.
  if (blas.find("/blas/libblas.so") == std::string::npos) return std::nullopt;
  return StrCat("warning: LibTorch is using the reference BLAS (", blas,
                "), about 30x slower than OpenBLAS; run scripts/install-deps.sh or "
                "'update-alternatives --config libblas.so.3-x86_64-linux-gnu'");
}

bool CpuHasNativeBf16() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;  // other architectures: let oneDNN decide; the warning errs on the side of telling
#endif
}

int HardwareThreads() {
  // The CPUs this process may run on (taskset, cgroups' cpusets, an MPI launcher's binding).
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void InstallInterruptHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool InterruptRequested() { return g_interrupted.load(std::memory_order_relaxed); }

void ClearInterruptForTesting() { g_interrupted = false; }

bool KeepFreedMemoryForReuse() {
  // Allocations up to 1 GiB come from the heap (not a fresh mapping each), and the heap is never
  // trimmed: a freed batch's tensors serve the next batch without page faults.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace xbar
