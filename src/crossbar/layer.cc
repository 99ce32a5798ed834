#include "xbar/crossbar/layer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "xbar/core/error.h"
#include "xbar/core/rng.h"
#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/plan.h"

namespace xbar {
namespace {

const auto kF32 = torch::TensorOptions().dtype(torch::kFloat32);
const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

torch::Tensor Index(const std::vector<int64_t>& v) {
  return torch::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, torch::kInt64).clone();
}

// Bit k of eight byte digits (element i in byte i of u) gathered into bits 0..7: the multiplier
// moves byte i's bit to bit 56 + i without carries between the partial products.
inline uint64_t PackByteBits(uint64_t u, int k) {
  return (((u >> k) & 0x0101010101010101ULL) * 0x0102040810204080ULL) >> 56;
}

// Bit k of the digits d[0, n) as words of 64 (digit r in bit r % 64 of word r / 64), zero-padded.
void PackDigits(const uint8_t* d, int64_t n, int k, uint64_t* out, int64_t words) {
  for (int64_t w = 0; w < words; ++w) {
    uint64_t word = 0;
    for (int64_t b = 0; b < 8; ++b) {
      const int64_t r0 = w * 64 + b * 8;
      uint64_t u = 0;
      if (r0 + 8 <= n) {
        std::memcpy(&u, d + r0, 8);
      } else {
        for (int64_t r = r0; r < n; ++r) u |= static_cast<uint64_t>(d[r]) << (8 * (r - r0));
      }
      word |= PackByteBits(u, k) << (8 * b);
    }
    out[w] = word;
  }
}

// Input digit planes [G, rows, g] (integers 0..2^v - 1) as packed words [G * rows][v][words].
std::vector<uint64_t> PackInputs(const torch::Tensor& xg, int v) {
  const int64_t GR = xg.size(0) * xg.size(1), g = xg.size(2), W = (g + 63) / 64;
  torch::Tensor digits = xg.to(torch::kUInt8).contiguous();
  const uint8_t* dp = digits.data_ptr<uint8_t>();
  std::vector<uint64_t> out(static_cast<size_t>(GR * v * W));
  at::parallel_for(0, GR, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int k = 0; k < v; ++k) PackDigits(dp + i * g, g, k, out.data() + (i * v + k) * W, W);
    }
  });
  return out;
}

// acc[c] += popcount(x & col[c]) << shift over n columns (vectorises to vpopcntq on AVX-512).
inline void PopcountAdd(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  for (int64_t c = 0; c < n; ++c) acc[c] += static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}
inline void PopcountSub(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  for (int64_t c = 0; c < n; ++c) acc[c] -= static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}

}  // namespace

CrossbarLayer::CrossbarLayer(std::string name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map,
                             const DeviceSpec& device)
    : name_(std::move(name)), map_(map), device_(device) {
  torch::NoGradGuard no_grad;
  torch::Tensor w = w2d.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  N_ = w.size(0);
  K_ = w.size(1);
  scale_ = weight_scale > 0 ? weight_scale : WeightScale(w, map.weight_bits, 0.0);
  if (scale_ <= 0) scale_ = 1.0;  // an all-zero layer
  q_ = QuantizeWeights(w, scale_, map.weight_bits);

  const Scheme& scheme = *map.scheme;
  const Encoding enc = map.encoding();
  slices_ = map.slices();
  components_ = scheme.Components();
  // The reads of every tile: one per slice (and component), pair differences when subtracting in
  // the analog domain, and the offset scheme's unit column.
  for (int s = 0; s < slices_; ++s) {
    const double shift = std::ldexp(1.0, map.cell_bits * s);
    if (components_ == 2 && map.analog_subtract) {
      reads_.push_back({0, s, true, shift});
    } else {
      for (int a = 0; a < components_; ++a) reads_.push_back({a, s, false, scheme.ComponentSign(a) * shift});
    }
  }
  if (scheme.UnitColumn(enc)) reads_.push_back({0, -1, false, -static_cast<double>(scheme.Bias(enc))});
  levels_ = LevelTable(map);

  // Tiling with masked mapping (plan.h).
  for (TileLayout& layout : LayoutTiles(q_, map)) {
    CheckTile(name_, q_, layout, map);
    Tile t;
    t.rows = std::move(layout.rows);
    t.cols = std::move(layout.cols);
    Encode(t);
    tiles_.push_back(std::move(t));
  }
  // Tiles with the same rows next to each other, so Forward lowers each row set once.
  std::stable_sort(tiles_.begin(), tiles_.end(), [](const Tile& a, const Tile& b) { return a.rows < b.rows; });
  Program(nullptr, 0, 0);
}

void CrossbarLayer::Encode(Tile& t) const {
  const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
  // [R, C] integer weights of this crossbar, and their level-table indices.
  torch::Tensor w = q_.index_select(0, Index(t.cols)).index_select(1, Index(t.rows)).t().contiguous();
  torch::Tensor idx = (w + static_cast<float>(levels_.qmax)).to(torch::kInt64).reshape({-1});
  std::vector<torch::Tensor> comps(static_cast<size_t>(components_));
  for (int a = 0; a < components_; ++a) {
    std::vector<torch::Tensor> per_slice;
    for (int s = 0; s < slices_; ++s) per_slice.push_back(levels_.Of(a, s).index_select(0, idx).view({R, C}));
    comps[static_cast<size_t>(a)] = torch::stack(per_slice, 2).reshape({R, C * slices_});  // column j*S + s
  }
  t.ideal = torch::stack(comps, 0).to(torch::kFloat32);
  if (map_.scheme->UnitColumn(map_.encoding())) t.unit = torch::ones({R}, kF32);
  // ADC groups: FORMS converts every fragment of m rows; the other schemes the whole column.
  const int64_t g = map_.GroupRows(R);
  t.group_rows = g;
  t.groups = (R + g - 1) / g;
  if (map_.scheme->SignPerFragment()) {
    torch::Tensor padded = torch::zeros({t.groups * g, C}, kF32);
    padded.narrow(0, 0, R).copy_(w);
    auto frag = padded.view({t.groups, g, C});
    auto has_pos = frag.gt(0).any(1), has_neg = frag.lt(0).any(1);
    // CheckTile has made sure no fragment holds both signs.
    t.sign = has_pos.to(torch::kFloat32) - has_neg.to(torch::kFloat32);  // [groups, C]
  }
}

void CrossbarLayer::BuildReads(Tile& t, const torch::Tensor& eff, const torch::Tensor& unit) const {
  const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
  std::vector<torch::Tensor> cols;
  for (const Read& r : reads_) {
    if (r.slice < 0) {
      cols.push_back(unit.view({R, 1}));
      continue;
    }
    auto comp = [&](int a) { return eff[a].view({R, C, slices_}).select(2, r.slice); };
    cols.push_back(r.difference ? comp(0) - comp(1) : comp(r.component));
  }
  torch::Tensor m = torch::cat(cols, 1);  // [R, NR]
  const int64_t NR = m.size(1);
  torch::Tensor padded = torch::zeros({t.groups * t.group_rows, NR}, kF32);
  padded.narrow(0, 0, R).copy_(m);
  t.reads = padded.view({t.groups, t.group_rows, NR}).contiguous();
}

void CrossbarLayer::SetAdc(Tile& t, const torch::Tensor& full_scale) const {
  // Per read: a linear ADC whose top code sits at the read's full scale (the largest of its
  // columns'), LSB = full scale / top code, and at least 1 level (integer sums are then exact); a
  // difference read is signed and spends one bit on the sign. Lossless (LSB 1) when the ADC has the
  // bits the full scale needs.
  const int64_t NR = t.reads.size(2);
  const int64_t C = static_cast<int64_t>(t.cols.size());
  std::vector<float> step(static_cast<size_t>(NR)), top(static_cast<size_t>(NR));
  torch::Tensor fs = full_scale.to(torch::kFloat64).contiguous();
  const double* fsp = fs.data_ptr<double>();
  int64_t col = 0;
  for (const Read& r : reads_) {
    const int64_t width = r.slice < 0 ? 1 : C;
    double read_fs = 0;
    for (int64_t j = 0; j < width; ++j) read_fs = std::max(read_fs, fsp[col + j]);
    const int need = BitsFor(read_fs);
    const int bits = map_.adc_bits > 0 ? std::min(map_.adc_bits - (r.difference ? 1 : 0), need) : need;
    const double top_code = std::ldexp(1.0, std::max(bits, 0)) - 1.0;
    const double lsb = read_fs > top_code && top_code > 0 ? read_fs / top_code : 1.0;
    for (int64_t j = 0; j < width; ++j) {
      step[static_cast<size_t>(col + j)] = static_cast<float>(lsb);
      top[static_cast<size_t>(col + j)] = static_cast<float>(top_code);
    }
    col += width;
  }
  t.step = torch::tensor(step);
  t.top = torch::tensor(top);
  // Per read column: ADC 1/LSB, code range and the digital weight of a code (LSB x slice shift x
  // pair sign or bias), times the fragment sign for polarized crossbars: [G, NR].
  t.adc_inv.assign(static_cast<size_t>(NR), 0.0f);
  t.adc_lo.assign(static_cast<size_t>(NR), 0.0f);
  t.adc_hi.assign(static_cast<size_t>(NR), 0.0f);
  t.adc_scale.assign(static_cast<size_t>(t.groups * NR), 0.0);
  torch::Tensor sign = t.sign.defined() ? t.sign.contiguous() : torch::Tensor();
  col = 0;
  for (const Read& r : reads_) {
    const int64_t width = r.slice < 0 ? 1 : C;
    for (int64_t j = 0; j < width; ++j, ++col) {
      const auto cs = static_cast<size_t>(col);
      t.adc_inv[cs] = 1.0f / step[cs];
      t.adc_hi[cs] = top[cs];
      t.adc_lo[cs] = r.difference ? -(top[cs] + 1) : 0.0f;
      for (int64_t gi = 0; gi < t.groups; ++gi) {
        const double sg = sign.defined() && r.slice >= 0 ? sign.data_ptr<float>()[gi * C + j] : 1.0;
        t.adc_scale[static_cast<size_t>(gi * NR + col)] = static_cast<double>(step[cs]) * r.coef * sg;
      }
    }
  }
}

void CrossbarLayer::Program(FaultInjector* faults, uint64_t seed, int64_t first_crossbar) {
  torch::NoGradGuard no_grad;
  stuck_ = sa0_ = sa1_ = 0;
  const bool draw_faults = faults != nullptr && faults->active();
  const double L = static_cast<double>(map_.levels());
  const double g0 = device_.g_min_levels();  // G_min in units of (G_max - G_min)
  const double drift = device_.drift_nu > 0 ? std::pow(device_.drift_time, -device_.drift_nu) : 1.0;
  int64_t crossbar = first_crossbar;
  for (size_t ti = 0; ti < tiles_.size(); ++ti) {
    Tile& t = tiles_[ti];
    const int64_t R = static_cast<int64_t>(t.rows.size()), CS = t.ideal.size(2);
    torch::Tensor eff = t.ideal.clone();
    torch::Tensor unit = t.unit.defined() ? t.unit.clone() : torch::Tensor();
    if (draw_faults) {
      // Physical layout: pairs interleave in one crossbar (column 2(jS+s)+a); two-crossbar uses two
      // crossbars (column jS+s each); the offset scheme's unit column follows the weights.
      std::vector<torch::Tensor> states;
      if (map_.scheme->SeparateArrays()) {
        states.push_back(faults->Draw(crossbar, R, CS));
        states.push_back(faults->Draw(crossbar + 1, R, CS));
      } else if (components_ == 2) {
        auto s = faults->Draw(crossbar, R, 2 * CS).view({R, CS, 2});
        states.push_back(s.select(2, 0));
        states.push_back(s.select(2, 1));
      } else {
        auto s = faults->Draw(crossbar, R, CS + (unit.defined() ? 1 : 0));
        states.push_back(s.narrow(1, 0, CS));
        if (unit.defined()) {
          auto u = s.select(1, CS);
          unit = torch::where(u.eq(1), torch::zeros_like(unit), torch::where(u.eq(2), torch::full_like(unit, L), unit));
          sa0_ += u.eq(1).sum().item<int64_t>();
          sa1_ += u.eq(2).sum().item<int64_t>();
        }
      }
      for (int a = 0; a < components_; ++a) {
        auto st = states[static_cast<size_t>(a)];
        auto e = eff[a];
        e.copy_(torch::where(st.eq(1), torch::zeros_like(e), torch::where(st.eq(2), torch::full_like(e, L), e)));
        sa0_ += st.eq(1).sum().item<int64_t>();
        sa1_ += st.eq(2).sum().item<int64_t>();
      }
    }
    if (device_.variation_sigma > 0 || drift != 1.0) {
      // G = g0 + level (units of G_max - G_min); G' = G exp(N(0, s^2)) (t/t0)^-nu; back to levels.
      Rng rng(DeriveSeed(seed, "variation." + name_, ti));
      auto perturb = [&](torch::Tensor& levels) {
        torch::Tensor z = torch::empty_like(levels);
        auto* zp = z.data_ptr<float>();
        for (int64_t i = 0; i < z.numel(); ++i) zp[i] = static_cast<float>(rng.Normal());
        levels = (levels + g0) * torch::exp(z * device_.variation_sigma) * drift - g0;
      };
      perturb(eff);
      if (unit.defined()) perturb(unit);
    }
    BuildReads(t, eff, unit);
    if (device_.read_noise_sigma > 0) {
      // Read noise of a cell is sigma * G of its programmed conductance (after faults, variation
      // and drift: eff + g0 in level units); a difference read adds both cells' variances.
      const double s2 = device_.read_noise_sigma * device_.read_noise_sigma;
      torch::Tensor g2 = (eff + g0).square() * s2;
      torch::Tensor u2 = unit.defined() ? (unit + g0).square() * s2 : torch::Tensor();
      Tile tmp = t;
      if (map_.analog_subtract && components_ == 2) {
        // var(a - b) = var(a) + var(b): build the difference read of -b's variance.
        torch::Tensor neg = g2.clone();
        neg[1].neg_();
        BuildReads(tmp, neg, u2);
      } else {
        BuildReads(tmp, g2, u2);
      }
      t.noise_var = tmp.reads;
    }
    // ADC range: the worst-case current of the group's rows (plan.h).
    const int64_t rows = std::min(R, t.group_rows);
    torch::Tensor fs = torch::full({t.reads.size(2)}, map_.ReadFullScale(rows), kF64);
    const double digit = std::ldexp(1.0, map_.dac_bits) - 1.0;
    if (t.unit.defined()) fs[fs.size(0) - 1] = static_cast<double>(rows) * digit;  // unit cells sit at level 1
    t.worst_fs = fs;
    SetAdc(t, fs);
    t.words = -1;  // packed on the first Forward that needs it
    crossbar += map_.scheme->ArraysPerTile();
  }
  stuck_ = sa0_ + sa1_;
  faulty_ = stuck_ > 0;  // an empty fault map, or no fault drawn here, keeps the exact fast path
}

void CrossbarLayer::PackReads(Tile& t) const {
  t.packed.clear();
  t.plane_shift.clear();
  t.plane_negative.clear();
  t.words = 0;
  t.kernel = 0;
  // Only integer cells (no variation or drift) without read noise have exact bit planes.
  if (t.noise_var.defined() || map_.dac_bits > 8 || !t.reads.eq(t.reads.round()).all().item<bool>()) return;
  const double pos = t.reads.max().item<double>(), neg = -t.reads.min().item<double>();
  if (std::max(pos, neg) >= 65536) return;
  for (int b = 0; b < BitsFor(std::max(pos, 0.0)); ++b) {
    t.plane_shift.push_back(b);
    t.plane_negative.push_back(0);
  }
  for (int b = 0; b < BitsFor(std::max(neg, 0.0)); ++b) {
    t.plane_shift.push_back(b);
    t.plane_negative.push_back(1);
  }
  const int64_t G = t.groups, g = t.group_rows, NR = t.reads.size(2), W = (g + 63) / 64;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  t.words = W;
  t.packed.assign(static_cast<size_t>(G * NP * W * NR), 0);
  torch::Tensor ri = t.reads.to(torch::kInt32).permute({0, 2, 1}).contiguous();  // [G, NR, g]
  const int32_t* rp = ri.data_ptr<int32_t>();
  std::vector<uint8_t> d(static_cast<size_t>(g));
  std::vector<uint64_t> words(static_cast<size_t>(W));
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t p = 0; p < NP; ++p) {
      const int shift = t.plane_shift[static_cast<size_t>(p)];
      const bool negative = t.plane_negative[static_cast<size_t>(p)] != 0;
      for (int64_t c = 0; c < NR; ++c) {
        const int32_t* col = rp + (gi * NR + c) * g;
        for (int64_t r = 0; r < g; ++r) {
          const int32_t part = negative ? std::max(-col[r], 0) : std::max(col[r], 0);
          d[static_cast<size_t>(r)] = static_cast<uint8_t>((part >> shift) & 1);
        }
        PackDigits(d.data(), g, 0, words.data(), W);
        for (int64_t w = 0; w < W; ++w) t.packed[static_cast<size_t>(((gi * NP + p) * W + w) * NR + c)] = words[static_cast<size_t>(w)];
      }
    }
  }
}

void CrossbarLayer::PackedRow(const Tile& t, int64_t group, const uint64_t* x, int64_t* acc) const {
  const int64_t NR = t.reads.size(2), W = t.words, v = map_.dac_bits;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  std::fill(acc, acc + NR, 0);
  for (int64_t p = 0; p < NP; ++p) {
    const uint64_t* wp = t.packed.data() + (group * NP + p) * W * NR;
    for (int64_t k = 0; k < v; ++k) {
      const int shift = t.plane_shift[static_cast<size_t>(p)] + static_cast<int>(k);
      for (int64_t w = 0; w < W; ++w) {
        const uint64_t xw = x[k * W + w];
        if (xw == 0) continue;
        if (t.plane_negative[static_cast<size_t>(p)]) {
          PopcountSub(xw, wp + w * NR, NR, shift, acc);
        } else {
          PopcountAdd(xw, wp + w * NR, NR, shift, acc);
        }
      }
    }
  }
}

torch::Tensor CrossbarLayer::PackedSums(const Tile& t, const std::vector<uint64_t>& inputs, int64_t rows) const {
  const int64_t G = t.groups, NR = t.reads.size(2), W = t.words, v = map_.dac_bits;
  torch::Tensor out = torch::empty({G, rows, NR}, kF32);
  float* op = out.data_ptr<float>();
  at::parallel_for(0, G * rows, 32, [&](int64_t i0, int64_t i1) {
    std::vector<int64_t> acc(static_cast<size_t>(NR));
    for (int64_t i = i0; i < i1; ++i) {
      PackedRow(t, i / rows, inputs.data() + i * v * W, acc.data());
      for (int64_t c = 0; c < NR; ++c) op[i * NR + c] = static_cast<float>(acc[static_cast<size_t>(c)]);
    }
  });
  return out;
}

void CrossbarLayer::SetSumKernel(SumKernel k) {
  kernel_ = k;
  for (Tile& t : tiles_) t.kernel = 0;
}

int64_t CrossbarLayer::packed_tiles() const {
  int64_t n = 0;
  for (const Tile& t : tiles_) {
    const bool packable = t.words > 0;
    n += packable && (kernel_ == SumKernel::kPacked || (kernel_ == SumKernel::kAuto && t.kernel == 2)) ? 1 : 0;
  }
  return n;
}

torch::Tensor CrossbarLayer::Reference(const torch::Tensor& xq) const {
  return torch::mm(xq.to(torch::kFloat64), q_.to(torch::kFloat64).t());
}

bool CrossbarLayer::lossless() const {
  if (faulty_ || !device_.ideal()) return false;
  for (const Tile& t : tiles_) {
    if (t.step.gt(1).any().item<bool>()) return false;
  }
  return true;
}

int64_t CrossbarLayer::crossbars() const {
  return static_cast<int64_t>(tiles_.size()) * map_.scheme->ArraysPerTile();
}

int64_t CrossbarLayer::cells() const {
  int64_t n = 0;
  for (const Tile& t : tiles_) {
    const int64_t used_cols = static_cast<int64_t>(t.cols.size()) * slices_ * components_ + (t.unit.defined() ? 1 : 0);
    n += static_cast<int64_t>(t.rows.size()) * used_cols;
  }
  return n;
}

int64_t CrossbarLayer::used_rows() const {
  int64_t n = 0;
  for (const Tile& t : tiles_) n += static_cast<int64_t>(t.rows.size());
  return n * map_.scheme->ArraysPerTile();  // each array of a pair has its drivers
}

int64_t CrossbarLayer::used_columns() const {
  int64_t n = 0;
  for (const Tile& t : tiles_) {
    n += static_cast<int64_t>(t.cols.size()) * slices_ * components_ + (t.unit.defined() ? 1 : 0);
  }
  return n;
}

double CrossbarLayer::level_sum() const {
  double sum = 0;
  for (const Tile& t : tiles_) {
    sum += t.ideal.sum().item<double>();
    if (t.unit.defined()) sum += t.unit.sum().item<double>();
  }
  return sum;
}

int CrossbarLayer::adc_bits() const {
  // The converter the hardware description gives the widest read (mapping.adc_bits, at most what
  // the read needs losslessly); a calibrated range moves its LSB, not its bits.
  int bits = 0;
  for (const Tile& t : tiles_) bits = std::max(bits, map_.AdcBits(std::min<int64_t>(static_cast<int64_t>(t.rows.size()), t.group_rows)));
  return bits;
}

void CrossbarLayer::StartCalibration() {
  calibrating_ = true;
  for (Tile& t : tiles_) {
    t.calib = torch::zeros({t.reads.size(2)}, kF32);
    t.calib_hist.assign(map_.adc_percentile < 100 ? reads_.size() * kCalibrationBins : 0, 0);
  }
}

void CrossbarLayer::Calibrate(Tile& t, const torch::Tensor& sums) {
  // sums: [G, rows, NR]. The largest |partial sum| per read column, and with a percentile below
  // 100 a histogram of |partial sums| per read over [0, worst-case full scale] (larger ones, which
  // variation can produce, count in the last bin).
  torch::Tensor a = sums.abs();
  t.calib = torch::maximum(t.calib, a.amax({0, 1}));
  if (t.calib_hist.empty()) return;
  const int64_t NR = a.size(2), rows = a.size(0) * a.size(1);
  const int64_t C = static_cast<int64_t>(t.cols.size());
  torch::Tensor flat = a.reshape({rows, NR}).contiguous();
  const float* ap = flat.data_ptr<float>();
  const double* wf = t.worst_fs.data_ptr<double>();
  int64_t col = 0;
  for (size_t ri = 0; ri < reads_.size(); ++ri) {
    const int64_t width = reads_[ri].slice < 0 ? 1 : C;
    int64_t* hist = t.calib_hist.data() + ri * kCalibrationBins;
    const double scale = static_cast<double>(kCalibrationBins) / std::max(wf[col], 1.0);
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = ap + i * NR + col;
      for (int64_t j = 0; j < width; ++j) {
        const auto b = static_cast<int64_t>(static_cast<double>(row[j]) * scale);
        ++hist[std::min<int64_t>(b, kCalibrationBins - 1)];
      }
    }
    col += width;
  }
}

void CrossbarLayer::FinishCalibration() {
  calibrating_ = false;
  for (Tile& t : tiles_) {
    if (!t.calib.defined()) continue;
    torch::Tensor fs = t.calib.to(torch::kFloat64).contiguous();
    if (!t.calib_hist.empty()) {
      // Each read's full scale: the upper edge of the histogram bin holding its percentile, at
      // most the largest value seen.
      double* fp = fs.data_ptr<double>();
      const double* wf = t.worst_fs.data_ptr<double>();
      const int64_t C = static_cast<int64_t>(t.cols.size());
      int64_t col = 0;
      for (size_t ri = 0; ri < reads_.size(); ++ri) {
        const int64_t width = reads_[ri].slice < 0 ? 1 : C;
        const int64_t* hist = t.calib_hist.data() + ri * kCalibrationBins;
        int64_t total = 0;
        for (int64_t b = 0; b < kCalibrationBins; ++b) total += hist[b];
        const double want = std::ceil(static_cast<double>(total) * map_.adc_percentile / 100.0);
        int64_t cum = 0, bin = kCalibrationBins - 1;
        for (int64_t b = 0; b < kCalibrationBins; ++b) {
          cum += hist[b];
          if (static_cast<double>(cum) >= want) {
            bin = b;
            break;
          }
        }
        const double edge = static_cast<double>(bin + 1) * std::max(wf[col], 1.0) / static_cast<double>(kCalibrationBins);
        for (int64_t j = 0; j < width; ++j) fp[col + j] = std::min(fp[col + j], edge);
        col += width;
      }
      t.calib_hist.clear();
    }
    SetAdc(t, fs);
  }
}

int64_t CrossbarLayer::Planes(bool signed_inputs) const { return map_.InputCycles(signed_inputs); }

void CrossbarLayer::CountReads(const torch::Tensor& xq_in, bool signed_inputs, ReadStats* stats) const {
  torch::NoGradGuard no_grad;
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32);
  const int64_t M = xq.size(0), P = Planes(signed_inputs), m = map_.fragment_rows, v = map_.dac_bits;
  const std::vector<int64_t>* last_rows = nullptr;  // tiles with the same rows sit next to each other
  int64_t last_needed = 0;
  for (const Tile& t : tiles_) {
    const int64_t R = static_cast<int64_t>(t.rows.size());
    stats->adc_conversions += P * M * t.groups * t.reads.size(2);
    // Zero-skipping: per fragment of m rows, cycles up to the highest non-zero input plane.
    const int64_t F = (R + m - 1) / m;
    stats->input_cycles += P * M * F;
    if (last_rows == nullptr || *last_rows != t.rows) {
      torch::Tensor xr = xq.index_select(1, Index(t.rows));
      if (F * m != R) xr = torch::constant_pad_nd(xr, {0, F * m - R}, 0);
      torch::Tensor fr = xr.view({M, F, m});
      torch::Tensor planes = torch::ceil(torch::ceil(torch::log2(fr.clamp_min(0).amax(2) + 1)) / static_cast<double>(v));
      if (signed_inputs) planes = torch::where(fr.lt(0).any(2), torch::full_like(planes, static_cast<double>(P)), planes);
      last_needed = static_cast<int64_t>(planes.sum().item<double>());
      last_rows = &t.rows;
    }
    stats->input_cycles_needed += last_needed;
  }
}

torch::Tensor CrossbarLayer::Forward(const torch::Tensor& xq_in, bool signed_inputs, uint64_t noise_seed,
                                     ReadStats* stats, int64_t first_mvm) {
  torch::NoGradGuard no_grad;
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t M = xq.size(0);
  XBAR_CHECK(xq.size(1) == K_, "layer ", name_, " expects ", K_, " inputs, got ", xq.size(1));
  // Input bit-planes and their digital weights: plane p holds bits shift[p] .. shift[p] + width of
  // the two's-complement code u (u = x + 2^b for a negative x).
  const int v = map_.dac_bits, b = map_.input_bits;
  std::vector<int> shifts;
  std::vector<int64_t> masks;
  std::vector<double> weight;
  const int low_bits = signed_inputs ? b - 1 : b;
  for (int shift = 0; shift < low_bits; shift += v) {
    shifts.push_back(shift);
    masks.push_back((int64_t{1} << std::min(v, low_bits - shift)) - 1);
    weight.push_back(std::ldexp(1.0, shift));
  }
  if (signed_inputs) {  // the two's-complement sign bit, shifted and subtracted
    shifts.push_back(b - 1);
    masks.push_back(-1);  // u >> (b - 1) is the sign bit for every input in range
    weight.push_back(-std::ldexp(1.0, b - 1));
  }
  const auto P = static_cast<int64_t>(shifts.size());
  XBAR_CHECK(P == Planes(signed_inputs), "plane count");
  torch::Tensor X_all = torch::empty({P, M, K_}, kF32);  // [P, M, K]
  {
    const float* xp = xq.data_ptr<float>();
    float* dst = X_all.data_ptr<float>();
    const int64_t MK = M * K_;
    const int64_t wrap = int64_t{1} << b;
    at::parallel_for(0, MK, 16384, [&](int64_t i0, int64_t i1) {
      for (int64_t p = 0; p < P; ++p) {
        const int shift = shifts[static_cast<size_t>(p)];
        const int64_t mask = masks[static_cast<size_t>(p)];
        float* out = dst + p * MK;
        for (int64_t i = i0; i < i1; ++i) {
          const auto x = static_cast<int64_t>(xp[i]);
          const int64_t u = signed_inputs && x < 0 ? x + wrap : x;
          out[i] = static_cast<float>((u >> shift) & mask);
        }
      }
    });
  }
  const int64_t M_all = M;
  torch::Tensor out = torch::zeros({M, N_}, kF64);
  // Positions go in chunks small enough for each crossbar's partial sums to stay in cache; chunks
  // are independent (disjoint output rows, read noise keyed by MVM), so they run in parallel and
  // the result does not depend on the number of threads. Within a chunk, tiles sharing their rows
  // (one column group after another) share the lowered input planes.
  constexpr int64_t kChunk = 256;
  auto run_chunk = [&](int64_t chunk) {
  const int64_t m_begin = chunk * kChunk;
  const int64_t M = std::min(kChunk, M_all - m_begin);
  torch::Tensor X = X_all.narrow(1, m_begin, M);
  const std::vector<int64_t>* cached_rows = nullptr;
  torch::Tensor xg;
  std::vector<uint64_t> xbits;
  double* out_p = out.data_ptr<double>() + m_begin * N_;
  for (Tile& t : tiles_) {
    const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
    const int64_t G = t.groups, g = t.group_rows, NR = t.reads.size(2);
    if (cached_rows == nullptr || *cached_rows != t.rows || xg.size(2) != g) {
      torch::Tensor xt = X.index_select(2, Index(t.rows));  // [P, M, R]
      if (G * g != R) xt = torch::constant_pad_nd(xt, {0, G * g - R}, 0);
      xg = xt.reshape({P * M, G, g}).permute({1, 0, 2}).contiguous();  // [G, P*M, g]
      cached_rows = &t.rows;
      xbits.clear();
    }
    // Column sums of every read in every cycle, [G, P*M, NR]: a float GEMM, or bit-packed; both
    // are exact. Once a crossbar runs bit-packed, its sums are computed row by row inside the ADC
    // loop below and never stored.
    const bool can_pack = t.words > 0;
    const bool fused = can_pack && !calibrating_ &&
                 (kernel_ == SumKernel::kPacked || (kernel_ == SumKernel::kAuto && t.kernel == 2));
    torch::Tensor sums;
    if (fused) {
      if (xbits.empty()) xbits = PackInputs(xg, v);
    } else if (!can_pack || kernel_ == SumKernel::kFloat || t.kernel == 1) {
      sums = torch::bmm(xg, t.reads);
    } else if (kernel_ == SumKernel::kPacked || t.kernel == 2) {
      if (xbits.empty()) xbits = PackInputs(xg, v);
      sums = PackedSums(t, xbits, P * M);
    } else {  // undecided: time both on these positions and keep the faster
      using Clock = std::chrono::steady_clock;
      const auto t0 = Clock::now();
      sums = torch::bmm(xg, t.reads);
      const auto t1 = Clock::now();
      if (xbits.empty()) xbits = PackInputs(xg, v);
      torch::Tensor alt = PackedSums(t, xbits, P * M);
      const auto t2 = Clock::now();
      t.kernel = (t2 - t1) < (t1 - t0) ? 2 : 1;
    }
    if (sums.defined()) {
      if (t.noise_var.defined()) {
        // sd = sqrt(sum_r x_r^2 var_r) per read, summed row by row in a fixed order (a BLAS GEMM's
        // order depends on the matrix sizes, so on the batch), then times a keyed normal draw.
        torch::Tensor sd = torch::empty({G, P * M, NR}, kF32);
        float* sdp = sd.data_ptr<float>();
        {
          torch::Tensor xgc = xg.contiguous(), nv = t.noise_var.contiguous();
          const float* xp = xgc.data_ptr<float>();
          const float* vp = nv.data_ptr<float>();
          at::parallel_for(0, G * P * M, 16, [&](int64_t i0, int64_t i1) {
            std::vector<double> acc(static_cast<size_t>(NR));
            for (int64_t i = i0; i < i1; ++i) {
              const int64_t gi = i / (P * M);
              std::fill(acc.begin(), acc.end(), 0.0);
              const float* xr = xp + i * g;
              for (int64_t r = 0; r < g; ++r) {
                if (xr[r] == 0.0f) continue;
                const double x2 = static_cast<double>(xr[r]) * xr[r];
                const float* vr = vp + (gi * g + r) * NR;
                for (int64_t c = 0; c < NR; ++c) acc[static_cast<size_t>(c)] += x2 * vr[c];
              }
              for (int64_t c = 0; c < NR; ++c) sdp[i * NR + c] = static_cast<float>(std::sqrt(std::max(acc[static_cast<size_t>(c)], 0.0)));
            }
          });
        }
        const uint64_t stream = DeriveSeed(noise_seed, "read-noise." + name_, static_cast<uint64_t>(&t - tiles_.data()));
        at::parallel_for(0, G * P * M, 64, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t gi = i / (P * M), p = (i / M) % P, mvm = first_mvm + m_begin + i % M;
            float* row = sdp + i * NR;
            for (int64_t c = 0; c < NR; ++c) {
              row[c] *= static_cast<float>(KeyedNormal(DrawKey(stream, static_cast<uint64_t>(gi * P + p),
                                                               static_cast<uint64_t>(mvm), static_cast<uint64_t>(c))));
            }
          }
        });
        sums = sums + sd;
      }
      if (calibrating_) Calibrate(t, sums);
      sums = sums.contiguous();
    }
    const float* sp = sums.defined() ? sums.data_ptr<float>() : nullptr;
    const float* inv = t.adc_inv.data();
    const float* lo = t.adc_lo.data();
    const float* hi = t.adc_hi.data();
    const int64_t weight_cols = (NR / C) * C;  // the offset scheme's unit column comes last
    const int64_t W = t.words;
    const std::vector<int64_t>& out_col = t.cols;
    // ADC, shift-and-add and scatter in one pass; positions are independent, so the result does not
    // depend on the number of threads.
    at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
      std::vector<double> acc(static_cast<size_t>(C));
      std::vector<float> code(static_cast<size_t>(NR)), row_buf(static_cast<size_t>(fused ? NR : 0));
      std::vector<int64_t> counts(static_cast<size_t>(fused ? NR : 0));
      for (int64_t m = m0; m < m1; ++m) {
        std::fill(acc.begin(), acc.end(), 0.0);
        double unit = 0.0;
        for (int64_t gi = 0; gi < G; ++gi) {
          const double* sc = t.adc_scale.data() + gi * NR;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = gi * P * M + p * M + m;
            const float* row;
            if (fused) {
              PackedRow(t, gi, xbits.data() + i * v * W, counts.data());
              for (int64_t c = 0; c < NR; ++c) row_buf[static_cast<size_t>(c)] = static_cast<float>(counts[static_cast<size_t>(c)]);
              row = row_buf.data();
            } else {
              row = sp + i * NR;
            }
            const double pw = weight[static_cast<size_t>(p)];
            for (int64_t c = 0; c < NR; ++c) code[static_cast<size_t>(c)] = std::min(hi[c], std::max(lo[c], std::nearbyint(row[c] * inv[c])));
            for (int64_t c0 = 0; c0 < weight_cols; c0 += C) {
              for (int64_t j = 0; j < C; ++j) acc[static_cast<size_t>(j)] += pw * (code[static_cast<size_t>(c0 + j)] * sc[c0 + j]);
            }
            for (int64_t c = weight_cols; c < NR; ++c) unit += pw * (code[static_cast<size_t>(c)] * sc[c]);
          }
        }
        double* o = out_p + m * N_;
        for (int64_t j = 0; j < C; ++j) o[out_col[static_cast<size_t>(j)]] += acc[static_cast<size_t>(j)] + unit;
      }
    });
  }
  };
  const int64_t chunks = (M_all + kChunk - 1) / kChunk;
  if (kernel_ != SumKernel::kFloat) {
    at::parallel_for(0, static_cast<int64_t>(tiles_.size()), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t i = t0; i < t1; ++i) {
        if (tiles_[static_cast<size_t>(i)].words < 0) PackReads(tiles_[static_cast<size_t>(i)]);
      }
    });
  }
  int64_t first = 0;
  // Calibration updates shared ranges, and kAuto decides every crossbar's kernel on the first chunk:
  // those run one chunk at a time (each chunk still parallel over its positions).
  bool undecided = false;
  for (const Tile& t : tiles_) undecided |= kernel_ == SumKernel::kAuto && t.words > 0 && t.kernel == 0;
  if (undecided && chunks > 0) run_chunk(first++);
  if (calibrating_ || chunks - first <= 1) {
    for (int64_t c = first; c < chunks; ++c) run_chunk(c);
  } else {
    at::parallel_for(first, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) run_chunk(c);
    });
  }
  if (stats != nullptr) CountReads(xq, signed_inputs, stats);
  return out;
}

}  // namespace xbar
