// Device-to-device variation (SPEC §4): lognormal, G' = G exp(N(0, sigma^2)) per cell, drawn once at
// programming from a stream keyed by (seed, layer, tile): cells first, then the unit column.
#include <cmath>

#include "xbar/core/rng.h"
#include "xbar/crossbar/stage.h"

namespace xbar {
namespace {

class Variation : public WeightStage {
 public:
  explicit Variation(double sigma) : sigma_(sigma) {}
  const char* Name() const override { return "variation"; }
  void Apply(TileCells& cells, const StageContext& ctx) const override {
    // G = g0 + level in units of G_max - G_min; back to levels after the draw.
    const double g0 = ctx.device.g_min_levels();
    Rng rng(DeriveSeed(ctx.seed, "variation." + ctx.layer, static_cast<uint64_t>(cells.tile)));
    auto perturb = [&](torch::Tensor& levels) {
      torch::Tensor z = torch::empty_like(levels);
      auto* zp = z.data_ptr<float>();
      for (int64_t i = 0; i < z.numel(); ++i) zp[i] = static_cast<float>(rng.Normal());
      levels = (levels + g0) * torch::exp(z * sigma_) - g0;
    };
    perturb(cells.levels);
    if (cells.unit.defined()) perturb(cells.unit);
    cells.changed = true;
  }

 private:
  double sigma_;
};

}  // namespace

std::unique_ptr<WeightStage> MakeVariationStage(const DeviceSpec& device) {
  if (device.variation_sigma <= 0) return nullptr;
  return std::make_unique<Variation>(device.variation_sigma);
}

}  // namespace xbar
