// The CIFAR-10 and CIFAR-100 binary readers (the first byte picks which).
#include "fuzz_common.h"
#include "xbar/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const xbar::CifarKind kind = data[0] & 1 ? xbar::CifarKind::kCifar100 : xbar::CifarKind::kCifar10;
  return xbar::fuzz::Expect(data + 1, size - 1, [kind](const std::string& bytes) {
    xbar::ImageSet s;
    xbar::AppendCifarRecords(bytes, "fuzz.bin", kind, s);
    if (s.pixels.size() != static_cast<size_t>(s.count) * 3072 || s.labels.size() != static_cast<size_t>(s.count)) std::abort();
  });
}
