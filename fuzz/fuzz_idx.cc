// The IDX reader (MNIST, Fashion-MNIST, EMNIST files), gzip detection and inflation included.
#include "fuzz_common.h"

#include "xbar/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return xbar::fuzz::Expect(data, size, [](const std::string& bytes) {
    // As ReadIdx reads a file's bytes: plain or gzip, inflation capped at 64 MiB so that a bomb is refused.
    const std::string source = "fuzz.idx";
    const xbar::IdxArray a = xbar::ParseIdx(xbar::InflateIfGzip(bytes, source, int64_t{64} << 20), source);
    if (static_cast<int64_t>(a.data.size()) != a.numel() * xbar::IdxElementSize(a.type_code)) std::abort();
  });
}
