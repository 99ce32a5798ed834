// xbar/core/platform.h — facts about the machine and process that commands report or act on.
//
//   if (auto w = SlowBlasWarning()) std::fprintf(stderr, "%s\n", w->c_str());
//   InstallInterruptHandlers();  ...  if (InterruptRequested()) throw InterruptedError(...);
#pragma once

#include <optional>
#include <string>

namespace xbar {

// Real path of the BLAS library loaded into this process ("" when none is loaded).
std::string LoadedBlasLibrary();

// A one-line warning when the loaded BLAS is Debian's reference implementation, which runs
// LibTorch's GEMMs ~30x slower than OpenBLAS; nullopt when the BLAS is a fast one or none.
std::optional<std::string> SlowBlasWarning();
// The same decision for a given library path.
std::optional<std::string> SlowBlasWarningFor(const std::string& blas_path);

// True when the CPU computes bfloat16 products natively (AVX512-BF16; AMX-BF16 CPUs have it too), where
// train.precision bf16 roughly halves training time; elsewhere oneDNN emulates bfloat16, slower than fp32.
bool CpuHasNativeBf16();

// Number of CPU cores this process may use (its affinity mask: taskset, cpusets, mpirun binding).
int HardwareThreads();

// Keeps freed memory in the process's heap for reuse instead of returning it to the kernel. LibTorch
// allocates and frees tensors of tens to hundreds of MB per batch (lowered inputs, float64
// references); glibc would map and unmap each, and the kernel zero every page again: 40 % of a
// VGG-8 `simulate` was page faults. The xbar command calls it first thing in main (the Google
// Benchmark binaries and the Python module keep glibc's defaults); returns false when the C
// library refused (the default behaviour stays).
bool KeepFreedMemoryForReuse();

// SIGINT/SIGTERM set a flag instead of killing the process, so long stages can stop at a safe
// point, leave their last checkpoint intact and exit with code 4. A second signal kills at once.
void InstallInterruptHandlers();
bool InterruptRequested();
void ClearInterruptForTesting();

}  // namespace xbar
