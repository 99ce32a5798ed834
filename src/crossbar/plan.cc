#include "xbar/crossbar/plan.h"

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"

namespace xbar {
namespace {

// Quantised weights as a contiguous float [N, K] tensor and its data.
const float* Data(const torch::Tensor& q) {
  XBAR_CHECK(q.dim() == 2 && q.is_contiguous() && q.scalar_type() == torch::kFloat32 && q.device().is_cpu(),
             "quantised weights must be a contiguous CPU float [N, K] tensor");
  return q.data_ptr<float>();
}

}  // namespace

int WeightSlices(const MappingSpec& map) {
  const int magnitude_bits = map.scheme == Scheme::kOffset ? map.weight_bits : map.weight_bits - 1;
  return (magnitude_bits + map.cell_bits - 1) / map.cell_bits;
}

int SchemeComponents(Scheme s) {
  return s == Scheme::kTwoColumn || s == Scheme::kTwoCrossbar || s == Scheme::kComplementary ? 2 : 1;
}

bool ColumnBudgetApplies(Scheme s) {
  // Only where a zero weight is an empty cell does a budget of non-zeros bound the column current.
  return s == Scheme::kTwoColumn || s == Scheme::kTwoCrossbar || s == Scheme::kPolarized;
}

double ReadFullScale(const MappingSpec& map, int64_t rows) {
  const int64_t active = map.column_budget > 0 && ColumnBudgetApplies(map.scheme) ? std::min(rows, map.column_budget) : rows;
  return static_cast<double>(active) * static_cast<double>(map.levels()) * (std::ldexp(1.0, map.dac_bits) - 1.0);
}

int64_t LogicalColumns(const MappingSpec& map) {
  const bool pair_in_one_array = map.scheme == Scheme::kTwoColumn || map.scheme == Scheme::kComplementary;
  const int64_t per_weight = WeightSlices(map) * (pair_in_one_array ? 2 : 1);
  return (map.cols - (map.scheme == Scheme::kOffset ? 1 : 0)) / per_weight;
}

namespace {

// max |w| over a float32 or float64 tensor, in one pass.
double MaxAbs(const torch::Tensor& w) {
  if (w.scalar_type() == torch::kFloat32 && w.is_contiguous() && w.device().is_cpu()) {
    const float* p = w.data_ptr<float>();
    float m = 0;
    for (int64_t i = 0; i < w.numel(); ++i) m = std::max(m, std::fabs(p[i]));
    return m;
  }
  return w.abs().max().item<double>();
}

template <typename T>
void Quantize(const T* w, int64_t n, double scale, double qmax, float* q) {
  for (int64_t i = 0; i < n; ++i) {
    // The same arithmetic as torch::round(w / scale) in float64: round half to even.
    q[i] = static_cast<float>(std::clamp(std::nearbyint(static_cast<double>(w[i]) / scale), -qmax, qmax));
  }
}

}  // namespace

double WeightScale(const torch::Tensor& w2d, int weight_bits, double stored) {
  const double qmax = static_cast<double>((int64_t{1} << (weight_bits - 1)) - 1);
  const double max_abs = MaxAbs(w2d);
  // Stored levels that need more bits than the crossbar holds are requantised.
  if (stored > 0 && max_abs / stored <= qmax + 0.5) return stored;
  return max_abs / qmax;
}

torch::Tensor QuantizeWeights(const torch::Tensor& w2d, double scale, int weight_bits) {
  const double qmax = static_cast<double>((int64_t{1} << (weight_bits - 1)) - 1);
  if (scale <= 0) scale = 1.0;  // an all-zero layer
  torch::Tensor w = w2d.detach().to(torch::kCPU);
  if (w.scalar_type() != torch::kFloat32) w = w.to(torch::kFloat64);
  w = w.contiguous();
  torch::Tensor q = torch::empty(w.sizes(), torch::TensorOptions().dtype(torch::kFloat32));
  if (w.scalar_type() == torch::kFloat32) {
    Quantize(w.data_ptr<float>(), w.numel(), scale, qmax, q.data_ptr<float>());
  } else {
    Quantize(w.data_ptr<double>(), w.numel(), scale, qmax, q.data_ptr<float>());
  }
  return q;
}

std::vector<TileLayout> LayoutTiles(const torch::Tensor& q, const MappingSpec& map) {
  const float* qp = Data(q);
  const int64_t N = q.size(0), K = q.size(1);
  const int64_t logical_cols = LogicalColumns(map);
  XBAR_CHECK(logical_cols >= 1, "crossbar too narrow (MappingSpec::FromConfig checks this)");
  std::vector<int64_t> live_cols;
  for (int64_t n = 0; n < N; ++n) {
    bool any = !map.compact;
    for (int64_t k = 0; k < K && !any; ++k) any = qp[n * K + k] != 0.0f;
    if (any) live_cols.push_back(n);
  }
  const bool compact_rows = map.compact && map.scheme != Scheme::kPolarized;
  std::vector<TileLayout> tiles;
  std::vector<char> live(static_cast<size_t>(K));
  for (size_t g0 = 0; g0 < live_cols.size(); g0 += static_cast<size_t>(logical_cols)) {
    const size_t g1 = std::min(live_cols.size(), g0 + static_cast<size_t>(logical_cols));
    std::vector<int64_t> cols(live_cols.begin() + static_cast<std::ptrdiff_t>(g0),
                              live_cols.begin() + static_cast<std::ptrdiff_t>(g1));
    std::fill(live.begin(), live.end(), compact_rows ? 0 : 1);
    if (compact_rows) {
      for (int64_t c : cols) {
        const float* col = qp + c * K;
        for (int64_t k = 0; k < K; ++k) live[static_cast<size_t>(k)] |= col[k] != 0.0f ? 1 : 0;
      }
    }
    std::vector<int64_t> rows;
    for (int64_t k = 0; k < K; ++k)
      if (live[static_cast<size_t>(k)]) rows.push_back(k);
    for (size_t r0 = 0; r0 < rows.size(); r0 += static_cast<size_t>(map.rows)) {
      TileLayout t;
      t.rows.assign(rows.begin() + static_cast<std::ptrdiff_t>(r0),
                    rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), r0 + static_cast<size_t>(map.rows))));
      t.cols = cols;
      tiles.push_back(std::move(t));
    }
  }
  return tiles;
}

void CheckTile(const std::string& layer, const torch::Tensor& q, const TileLayout& t, const MappingSpec& map) {
  const float* qp = Data(q);
  const int64_t K = q.size(1), R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
  if (map.column_budget > 0 && ColumnBudgetApplies(map.scheme)) {
    int64_t worst = -1, worst_col = 0;
    for (int64_t j = 0; j < C; ++j) {
      const float* col = qp + t.cols[static_cast<size_t>(j)] * K;
      int64_t nnz = 0;
      for (int64_t r : t.rows) nnz += col[r] != 0.0f ? 1 : 0;
      if (nnz > worst) {
        worst = nnz;
        worst_col = t.cols[static_cast<size_t>(j)];
      }
    }
    if (worst > map.column_budget) {
      throw InputError(StrCat("layer ", layer, " exceeds mapping.column_budget = ", map.column_budget, ": output ",
                              worst_col, " has ", worst, " non-zero weights on one crossbar; "
                              "compress with compress.column_budget first"));
    }
  }
  if (map.scheme == Scheme::kPolarized) {
    const int64_t g = map.fragment_rows;
    for (int64_t f0 = 0; f0 < R; f0 += g) {
      const int64_t f1 = std::min(R, f0 + g);
      for (int64_t j = 0; j < C; ++j) {
        const float* col = qp + t.cols[static_cast<size_t>(j)] * K;
        bool pos = false, neg = false;
        for (int64_t i = f0; i < f1; ++i) {
          const float v = col[t.rows[static_cast<size_t>(i)]];
          pos = pos || v > 0;
          neg = neg || v < 0;
        }
        if (pos && neg) {
          throw InputError(StrCat("layer ", layer, " is not polarised for the polarized scheme: rows ",
                                  t.rows[static_cast<size_t>(f0)], "..", t.rows[static_cast<size_t>(f1 - 1)], " of output ",
                                  t.cols[static_cast<size_t>(j)], " hold weights of both signs; compress with "
                                  "compress.polarize_fragment = ", g, " (mapping.fragment_rows) first"));
        }
      }
    }
  }
}

LayerPlan PlanLayer(const std::string& name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map) {
  torch::NoGradGuard no_grad;
  const double scale = weight_scale > 0 ? weight_scale : WeightScale(w2d, map.weight_bits, 0.0);
  const torch::Tensor q = QuantizeWeights(w2d, scale, map.weight_bits);
  const float* qp = q.data_ptr<float>();
  const int64_t K = q.size(1);
  const int S = WeightSlices(map), A = SchemeComponents(map.scheme);
  const bool offset = map.scheme == Scheme::kOffset;
  const int64_t L = map.levels(), arrays = map.scheme == Scheme::kTwoCrossbar ? 2 : 1;
  const int64_t unit = offset ? 1 : 0;
  // Reads per weight column: one per slice, two when a pair is converted column by column.
  const int64_t reads_per_col = S * (A == 2 && !map.analog_subtract ? 2 : 1);
  // Levels programmed for an integer weight v, over its slices and components (see Encode).
  const auto qmax = (int64_t{1} << (map.weight_bits - 1)) - 1;
  std::vector<double> level(static_cast<size_t>(2 * qmax + 1));
  for (int64_t v = -qmax; v <= qmax; ++v) {
    const int64_t stored = offset ? v + (int64_t{1} << (map.weight_bits - 1)) : std::abs(v);
    double sum = 0;
    for (int s = 0; s < S; ++s) {
      const int64_t digit = (stored >> (map.cell_bits * s)) & L;
      sum += map.scheme == Scheme::kComplementary ? static_cast<double>(2 * L - digit) : static_cast<double>(digit);
    }
    level[static_cast<size_t>(v + qmax)] = sum;
  }
  LayerPlan p;
  double widest = 0;  // full-scale current of the widest read
  for (const TileLayout& t : LayoutTiles(q, map)) {
    CheckTile(name, q, t, map);
    const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
    const int64_t group_rows = map.scheme == Scheme::kPolarized ? map.fragment_rows : R;
    const int64_t groups = (R + group_rows - 1) / group_rows;
    const int64_t used_cols = C * S * A + unit;
    p.tiles += 1;
    p.crossbars += arrays;
    p.cells += R * used_cols;
    p.used_rows += R * arrays;
    p.used_columns += used_cols;
    p.conversions_per_plane += groups * (reads_per_col * C + unit);
    double sum = static_cast<double>(unit * R);  // the offset scheme's unit cells sit at level 1
    for (int64_t c : t.cols) {
      const float* col = qp + c * K;
      for (int64_t r : t.rows) sum += level[static_cast<size_t>(static_cast<int64_t>(col[r]) + qmax)];
    }
    p.level_sum += sum;
    widest = std::max(widest, ReadFullScale(map, std::min(R, group_rows)));
  }
  p.adc_bits = map.adc_bits > 0 ? map.adc_bits
                                : (p.tiles > 0 ? BitsFor(widest) : 0) + (map.analog_subtract && A == 2 ? 1 : 0);
  return p;
}

}  // namespace xbar
