// The safetensors reader: header JSON, dtypes, shapes, offsets, metadata, and the values.
#include "fuzz_common.h"
#include "xbar/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return xbar::fuzz::Expect(data, size, [](const std::string& bytes) {
    const xbar::SafeTensors st = xbar::ParseSafeTensors(bytes, "fuzz.safetensors");
    for (const auto& [name, t] : st.tensors) (void)t.ToDoubles();
  });
}
