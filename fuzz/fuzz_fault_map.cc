// The measured fault-map reader (CSV crossbar,row,col,SA0|SA1).
#include "fuzz_common.h"
#include "xbar/crossbar/fault_map.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return xbar::fuzz::Expect(data, size, [](const std::string& text) {
    const xbar::FaultMap m = xbar::ParseFaultMap(text, "fuzz.csv");
    for (const auto& [crossbar, entries] : m) {
      for (const auto& e : entries) {
        if (crossbar < 0 || e.row < 0 || e.col < 0 || (e.state != 1 && e.state != 2)) std::abort();
      }
    }
  });
}
