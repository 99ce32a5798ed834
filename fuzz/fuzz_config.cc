// The experiment loader and validator: YAML text -> Config (schema, ranges, presets) -> the
// hardware description every stage reads (mapping, device, faults, architecture).
#include "fuzz_common.h"
#include "xbar/config/config.h"
#include "xbar/crossbar/spec.h"
#include "xbar/hw/hw.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return xbar::fuzz::Expect(data, size, [](const std::string& text) {
    const xbar::Config cfg = xbar::Config::Parse(text, "fuzz.yaml");
    (void)cfg.ToYaml();
    (void)xbar::MappingSpec::FromConfig(cfg);
    (void)xbar::DeviceSpec::FromConfig(cfg);
    (void)xbar::FaultSpec::FromConfig(cfg);
    (void)xbar::hw::ArchSpec::FromConfig(cfg);
  });
}
