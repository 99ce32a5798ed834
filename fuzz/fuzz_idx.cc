// The IDX reader (MNIST, Fashion-MNIST, EMNIST files), gzip detection and inflation included.
#include "fuzz_common.h"
#include <unistd.h>

#include "xbar/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return xbar::fuzz::Expect(data, size, [](const std::string& bytes) {
    // Through a file, as xbar reads data: plain or gzip, capped at 64 MiB so that a bomb is refused.
    static const std::string path = "/tmp/xbar-fuzz-idx-" + std::to_string(::getpid());
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) std::abort();
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    const xbar::IdxArray a = xbar::ParseIdx(xbar::ReadMaybeGzip(path, int64_t{64} << 20), path);
    if (static_cast<int64_t>(a.data.size()) != a.numel() * xbar::IdxElementSize(a.type_code)) std::abort();
  });
}
