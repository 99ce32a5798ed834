// Read noise (SPEC §4): every read of a cell adds Gaussian noise of sigma x its programmed
// conductance (after faults, variation and drift: level + g0), so a column sum over inputs x_r
// gets sd sqrt(sum_r x_r^2 var_r); a difference read adds both cells' variances. Each draw is keyed
// by what it models (crossbar, fragment, input plane, MVM, column), never by how the work is split.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "xbar/core/rng.h"
#include "xbar/crossbar/stage.h"

namespace xbar {
namespace {

class ReadNoise : public ReadStage {
 public:
  explicit ReadNoise(double sigma) : sigma_(sigma) {}
  const char* Name() const override { return "read-noise"; }
  bool Exact() const override { return false; }
  bool PerRead() const override { return true; }

  void Prepare(CrossbarTile& t, const TileCells& cells, const StageContext& ctx) const override {
    const double s2 = sigma_ * sigma_;
    const double g0 = ctx.device.g_min_levels();
    torch::Tensor g2 = (cells.levels + g0).square() * s2;
    torch::Tensor u2 = cells.unit.defined() ? (cells.unit + g0).square() * s2 : torch::Tensor();
    // var(a - b) = var(a) + var(b): the difference read of -b's variance.
    if (ctx.map.analog_subtract && ctx.map.scheme->Components() == 2) g2[1].neg_();
    t.noise_var = AssembleReads(t, ctx.reads, g2, u2, ctx.map.slices());
  }

  void Apply(const CrossbarTile& t, const torch::Tensor& xg_in, torch::Tensor& sums, const StageContext& ctx,
             const ReadBatch& b) const override {
    const int64_t G = t.groups, g = t.group_rows, NR = t.read_columns(), PM = b.planes * b.positions;
    // sd = sqrt(sum_r x_r^2 var_r) per read, summed row by row in a fixed order (a BLAS GEMM's order
    // depends on the matrix sizes, so on the batch), then times a keyed normal draw.
    torch::Tensor sd = torch::empty({G, PM, NR}, torch::kFloat32);
    float* sdp = sd.data_ptr<float>();
    torch::Tensor xg = xg_in.contiguous(), nv = t.noise_var.contiguous();
    const float* xp = xg.data_ptr<float>();
    const float* vp = nv.data_ptr<float>();
    at::parallel_for(0, G * PM, 16, [&](int64_t i0, int64_t i1) {
      std::vector<double> acc(static_cast<size_t>(NR));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t gi = i / PM;
        std::fill(acc.begin(), acc.end(), 0.0);
        const float* xr = xp + i * g;
        for (int64_t r = 0; r < g; ++r) {
          if (xr[r] == 0.0f) continue;
          const double x2 = static_cast<double>(xr[r]) * xr[r];
          const float* vr = vp + (gi * g + r) * NR;
          for (int64_t c = 0; c < NR; ++c) acc[static_cast<size_t>(c)] += x2 * vr[c];
        }
        for (int64_t c = 0; c < NR; ++c) {
          sdp[i * NR + c] = static_cast<float>(std::sqrt(std::max(acc[static_cast<size_t>(c)], 0.0)));
        }
      }
    });
    const uint64_t stream = DeriveSeed(b.noise_seed, "read-noise." + ctx.layer, static_cast<uint64_t>(b.tile));
    at::parallel_for(0, G * PM, 64, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t gi = i / PM, p = (i / b.positions) % b.planes, mvm = b.first_mvm + i % b.positions;
        float* row = sdp + i * NR;
        const uint64_t head = DrawKeyHead(stream, static_cast<uint64_t>(gi * b.planes + p), static_cast<uint64_t>(mvm));
        for (int64_t c = 0; c < NR; ++c) row[c] *= static_cast<float>(KeyedNormal(DrawKeyTail(head, static_cast<uint64_t>(c))));
      }
    });
    sums = sums + sd;
  }

 private:
  double sigma_;
};

}  // namespace

std::unique_ptr<ReadStage> MakeReadNoiseStage(const DeviceSpec& device) {
  if (device.read_noise_sigma <= 0) return nullptr;
  return std::make_unique<ReadNoise>(device.read_noise_sigma);
}

}  // namespace xbar
