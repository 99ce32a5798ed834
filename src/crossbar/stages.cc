#include "xbar/crossbar/stage.h"

namespace xbar {

// The registry of non-idealities: each list in the order the effects act (SPEC §4). A new effect
// is one file in stages/ and one line here.
std::vector<std::unique_ptr<WeightStage>> BuildWeightStages(const MappingSpec& /*map*/, const DeviceSpec& device) {
  std::vector<std::unique_ptr<WeightStage>> out;
  auto add = [&](std::unique_ptr<WeightStage> s) {
    if (s) out.push_back(std::move(s));
  };
  add(MakeLevelsStage());  // the scheme's levels (encoded once per tile by EncodeTile)
  add(MakeStuckAtStage());
  add(MakeVariationStage(device));
  add(MakeDriftStage(device));
  return out;
}

ReadChain BuildReadStages(const MappingSpec& map, const DeviceSpec& device) {
  ReadChain chain;
  auto dac = std::make_unique<DacStage>(map);
  chain.dac = dac.get();
  chain.stages.push_back(std::move(dac));
  auto add = [&](std::unique_ptr<ReadStage> s) {
    if (s) chain.stages.push_back(std::move(s));
  };
  add(MakeIrDropStage(device));      // the array: what each read sees through its wires
  add(MakeReadNoiseStage(device));   // per read
  auto adc = std::make_unique<AdcStage>();
  chain.adc = adc.get();
  chain.stages.push_back(std::move(adc));
  return chain;
}

bool ReadChain::exact() const {
  for (const auto& s : stages) {
    if (!s->Exact()) return false;
  }
  return true;
}

bool ReadChain::per_pattern() const {
  for (const auto& s : stages) {
    if (s->PerRead()) return false;
  }
  return true;
}

std::string ReadChain::Names() const {
  std::string out;
  for (const auto& s : stages) out += (out.empty() ? "" : " > ") + std::string(s->Name());
  return out;
}

}  // namespace xbar
