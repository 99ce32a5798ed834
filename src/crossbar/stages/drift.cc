// Conductance drift (SPEC §4): G(t) = G0 (t / t0)^-nu at inference time t / t0 = device.drift_time.
#include <cmath>

#include "xbar/crossbar/stage.h"

namespace xbar {
namespace {

class Drift : public WeightStage {
 public:
  explicit Drift(double factor) : factor_(factor) {}
  const char* Name() const override { return "drift"; }
  void Apply(TileCells& cells, const StageContext& ctx) const override {
    const double g0 = ctx.device.g_min_levels();
    cells.levels = (cells.levels + g0) * factor_ - g0;
    if (cells.unit.defined()) cells.unit = (cells.unit + g0) * factor_ - g0;
    cells.changed = true;
  }

 private:
  double factor_;
};

}  // namespace

std::unique_ptr<WeightStage> MakeDriftStage(const DeviceSpec& device) {
  if (device.drift_nu <= 0 || device.drift_time == 1.0) return nullptr;
  return std::make_unique<Drift>(std::pow(device.drift_time, -device.drift_nu));
}

}  // namespace xbar
