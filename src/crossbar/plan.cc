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

LevelTable::LevelTable(const MappingSpec& map) {
  const Scheme& scheme = *map.scheme;
  const Encoding e = map.encoding();
  const int A = scheme.Components(), S = map.slices();
  qmax = (int64_t{1} << (map.weight_bits - 1)) - 1;
  const int64_t n = 2 * qmax + 1;
  table_ = torch::empty({A, S, n}, torch::TensorOptions().dtype(torch::kFloat32));
  float* tp = table_.data_ptr<float>();
  sum_.assign(static_cast<size_t>(n), 0.0);
  for (int a = 0; a < A; ++a) {
    for (int s = 0; s < S; ++s) {
      for (int64_t q = -qmax; q <= qmax; ++q) {
        const int64_t level = scheme.Level(q, a, s, e);
        XBAR_CHECK(level >= 0 && level <= map.levels(), scheme.Name(), " encodes ", q, " as level ", level);
        tp[(a * S + s) * n + q + qmax] = static_cast<float>(level);
        sum_[static_cast<size_t>(q + qmax)] += static_cast<double>(level);
      }
    }
  }
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
  const int64_t logical_cols = map.LogicalColumns();
  XBAR_CHECK(logical_cols >= 1, "crossbar too narrow (MappingSpec::FromConfig checks this)");
  const bool compact_rows = map.compact && !map.scheme->SignPerFragment();
  // The tiles of one grouping of the columns: each group's live rows cut into crossbars of map.rows.
  std::vector<char> live(static_cast<size_t>(K));
  auto tiles_of = [&](const std::vector<std::vector<int64_t>>& groups) {
    std::vector<TileLayout> tiles;
    for (const auto& cols : groups) {
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
  };
  // Packed: the live columns in order, map.LogicalColumns() at a time (removed filters free whole
  // arrays). Aligned: the live columns of each block of map.LogicalColumns() original columns
  // (row segments pruned per column block, as crossbar-row compression prunes them, stay in one
  // array even when a removed filter before them would shift every packed group). The one with
  // fewer crossbars is mapped; packed on a tie.
  std::vector<std::vector<int64_t>> packed, aligned;
  bool dead = false;
  for (int64_t n = 0; n < N; ++n) {
    bool any = !map.compact;
    for (int64_t k = 0; k < K && !any; ++k) any = qp[n * K + k] != 0.0f;
    dead = dead || !any;
    if (!any) continue;
    if (packed.empty() || static_cast<int64_t>(packed.back().size()) == logical_cols) packed.emplace_back();
    packed.back().push_back(n);
    if (aligned.empty() || aligned.back().front() / logical_cols != n / logical_cols) aligned.emplace_back();
    aligned.back().push_back(n);
  }
  std::vector<TileLayout> tiles = tiles_of(packed);
  if (dead && compact_rows) {
    std::vector<TileLayout> other = tiles_of(aligned);
    if (other.size() < tiles.size()) tiles = std::move(other);
  }
  return tiles;
}

void CheckTile(const std::string& layer, const torch::Tensor& q, const TileLayout& t, const MappingSpec& map) {
  const float* qp = Data(q);
  const int64_t K = q.size(1), R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
  if (map.column_budget > 0 && map.scheme->ZeroIsEmptyCell()) {
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
  if (map.scheme->SignPerFragment()) {
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

LayerPlan PlanLayer(const std::string& name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map,
                    std::vector<std::vector<int64_t>>* tile_rows) {
  torch::NoGradGuard no_grad;
  const double scale = weight_scale > 0 ? weight_scale : WeightScale(w2d, map.weight_bits, 0.0);
  const torch::Tensor q = QuantizeWeights(w2d, scale, map.weight_bits);
  const float* qp = q.data_ptr<float>();
  const int64_t K = q.size(1);
  const Scheme& scheme = *map.scheme;
  const int S = map.slices(), A = scheme.Components();
  const int64_t arrays = scheme.ArraysPerTile();
  const int64_t unit = scheme.UnitColumn(map.encoding()) ? 1 : 0;
  // Reads per weight column: one per slice, two when a pair is converted column by column.
  const int64_t reads_per_col = S * (A == 2 && !map.analog_subtract ? 2 : 1);
  const LevelTable levels(map);
  const bool flip = map.Flipped() && A == 1;
  // Flipped encoding: every weight's S slice levels packed as 16-bit lanes, four to a word
  // (SWAR), so a column's per-slice level sums are W word additions per row; a lane holds a
  // column's sum while rows x L < 2^16 (every crossbar here: rows <= map.rows).
  const int64_t W = (S + 3) / 4;
  const bool swar = flip && map.rows * map.levels() < 65536;
  std::vector<uint64_t> packed_levels;
  if (swar) {
    const int64_t n = 2 * levels.qmax + 1;
    packed_levels.assign(static_cast<size_t>(n * W), 0);
    for (int s = 0; s < S; ++s) {
      const torch::Tensor table = levels.Of(0, s).contiguous();
      const float* tp = table.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) {
        packed_levels[static_cast<size_t>(i * W + s / 4)] |= static_cast<uint64_t>(tp[i]) << (16 * (s % 4));
      }
    }
  }
  std::vector<uint64_t> column(static_cast<size_t>(W));
  std::vector<torch::Tensor> slice_tables;  // the other crossbars: per slice, the level of q + qmax
  for (int s = 0; flip && !swar && s < S; ++s) slice_tables.push_back(levels.Of(0, s).contiguous());
  LayerPlan p;
  for (const TileLayout& t : LayoutTiles(q, map)) {
    CheckTile(name, q, t, map);
    const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
    const int64_t group_rows = map.GroupRows(R);
    const int64_t groups = (R + group_rows - 1) / group_rows;
    const int64_t used_cols = C * S * A + unit;
    p.tiles += 1;
    p.crossbars += arrays;
    p.cells += R * used_cols;
    p.used_rows += R * arrays;
    p.used_columns += used_cols;
    p.conversions_per_plane += groups * (reads_per_col * C + unit);
    double sum = static_cast<double>(unit * R);  // the offset scheme's unit cells sit at level 1
    if (flip) {
      // Flipped encoding (EncodeTile): a column of levels summing past R L / 2 stores L - level.
      const double full = static_cast<double>(R * map.levels());
      for (int64_t c : t.cols) {
        const float* col = qp + c * K;
        if (swar) {
          std::fill(column.begin(), column.end(), 0);
          for (int64_t r : t.rows) {
            const uint64_t* lv = packed_levels.data() + (static_cast<int64_t>(col[r]) + levels.qmax) * W;
            for (int64_t w = 0; w < W; ++w) column[static_cast<size_t>(w)] += lv[w];
          }
          for (int s = 0; s < S; ++s) {
            const auto v = static_cast<double>((column[static_cast<size_t>(s / 4)] >> (16 * (s % 4))) & 0xFFFF);
            sum += FlipsColumn(v, R, map.levels()) ? full - v : v;
          }
        } else {
          for (int s = 0; s < S; ++s) {
            const float* tp = slice_tables[static_cast<size_t>(s)].data_ptr<float>();
            double v = 0;
            for (int64_t r : t.rows) v += tp[static_cast<int64_t>(col[r]) + levels.qmax];
            sum += FlipsColumn(v, R, map.levels()) ? full - v : v;
          }
        }
      }
    } else {
      for (int64_t c : t.cols) {
        const float* col = qp + c * K;
        for (int64_t r : t.rows) sum += levels.Sum(static_cast<int64_t>(col[r]));
      }
    }
    p.level_sum += sum;
    p.adc_bits = std::max(p.adc_bits, map.AdcBits(std::min(R, group_rows)));
    if (tile_rows != nullptr) tile_rows->push_back(t.rows);
  }
  return p;
}

}  // namespace xbar
