#include "xbar/crossbar/layer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"
#include "xbar/core/rng.h"
#include "xbar/crossbar/faults.h"

namespace xbar {
namespace {

const auto kF32 = torch::TensorOptions().dtype(torch::kFloat32);
const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

torch::Tensor Index(const std::vector<int64_t>& v) {
  return torch::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, torch::kInt64).clone();
}

bool PairInOneArray(Scheme s) { return s == Scheme::kTwoColumn || s == Scheme::kComplementary; }

}  // namespace

CrossbarLayer::CrossbarLayer(std::string name, const torch::Tensor& w2d, double weight_scale, const MappingSpec& map,
                             const DeviceSpec& device)
    : name_(std::move(name)), map_(map), device_(device) {
  torch::NoGradGuard no_grad;
  torch::Tensor w = w2d.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  N_ = w.size(0);
  K_ = w.size(1);
  const double qmax = static_cast<double>((int64_t{1} << (map.weight_bits - 1)) - 1);
  scale_ = weight_scale > 0 ? weight_scale : w.abs().max().item<double>() / qmax;
  if (scale_ <= 0) scale_ = 1.0;  // an all-zero layer
  q_ = torch::clamp(torch::round(w / scale_), -qmax, qmax).to(torch::kFloat32);

  const bool offset = map.scheme == Scheme::kOffset;
  const int magnitude_bits = offset ? map.weight_bits : map.weight_bits - 1;
  slices_ = (magnitude_bits + map.cell_bits - 1) / map.cell_bits;
  components_ = (map.scheme == Scheme::kTwoColumn || map.scheme == Scheme::kTwoCrossbar ||
                 map.scheme == Scheme::kComplementary) ? 2 : 1;
  // The reads of every tile: one per slice (and component), pair differences when subtracting in
  // the analog domain, and the offset scheme's unit column.
  for (int s = 0; s < slices_; ++s) {
    const double shift = std::ldexp(1.0, map.cell_bits * s);
    if (components_ == 2 && map.analog_subtract) {
      reads_.push_back({0, s, true, shift});
    } else if (components_ == 2) {
      reads_.push_back({0, s, false, shift});
      reads_.push_back({1, s, false, -shift});
    } else {
      reads_.push_back({0, s, false, shift});
    }
  }
  if (offset) reads_.push_back({0, -1, false, -std::ldexp(1.0, map.weight_bits - 1)});

  // Tiling with masked mapping: live columns grouped by the crossbar's logical width, then each
  // group's live rows cut into crossbars of R rows. Polarized layers keep every row so fragments
  // stay aligned with the rows compression polarised.
  const int64_t per_weight = slices_ * (PairInOneArray(map.scheme) ? 2 : 1);
  const int64_t logical_cols = (map.cols - (offset ? 1 : 0)) / per_weight;
  XBAR_CHECK(logical_cols >= 1, "crossbar too narrow (MappingSpec::FromConfig checks this)");
  torch::Tensor nz = q_.ne(0);  // [N, K]
  std::vector<int64_t> live_cols;
  auto col_any = nz.any(1);
  for (int64_t n = 0; n < N_; ++n) {
    if (!map.compact || col_any[n].item<bool>()) live_cols.push_back(n);
  }
  const bool compact_rows = map.compact && map.scheme != Scheme::kPolarized;
  for (size_t g0 = 0; g0 < live_cols.size(); g0 += static_cast<size_t>(logical_cols)) {
    std::vector<int64_t> cols(live_cols.begin() + static_cast<std::ptrdiff_t>(g0),
                              live_cols.begin() + static_cast<std::ptrdiff_t>(std::min(live_cols.size(), g0 + static_cast<size_t>(logical_cols))));
    std::vector<int64_t> rows;
    if (compact_rows) {
      auto row_any = nz.index_select(0, Index(cols)).any(0);
      auto* ra = row_any.data_ptr<bool>();
      for (int64_t k = 0; k < K_; ++k) {
        if (ra[k]) rows.push_back(k);
      }
    } else {
      for (int64_t k = 0; k < K_; ++k) rows.push_back(k);
    }
    for (size_t r0 = 0; r0 < rows.size(); r0 += static_cast<size_t>(map.rows)) {
      Tile t;
      t.rows.assign(rows.begin() + static_cast<std::ptrdiff_t>(r0),
                    rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), r0 + static_cast<size_t>(map.rows))));
      t.cols = cols;
      Encode(t);
      tiles_.push_back(std::move(t));
    }
  }
  // Tiles with the same rows next to each other, so Forward lowers each row set once.
  std::stable_sort(tiles_.begin(), tiles_.end(), [](const Tile& a, const Tile& b) { return a.rows < b.rows; });
  Program(nullptr, 0, 0);
}

void CrossbarLayer::Encode(Tile& t) const {
  const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
  const int64_t L = map_.levels();
  // [R, C] integer weights of this crossbar.
  torch::Tensor w = q_.index_select(0, Index(t.cols)).index_select(1, Index(t.rows)).t().contiguous();
  torch::Tensor mag = w.abs();
  auto slice = [&](const torch::Tensor& v, int s) {
    return torch::fmod(torch::floor(v / std::ldexp(1.0, map_.cell_bits * s)), static_cast<double>(L + 1));
  };
  std::vector<torch::Tensor> comps(static_cast<size_t>(components_));
  for (int a = 0; a < components_; ++a) {
    std::vector<torch::Tensor> per_slice;
    for (int s = 0; s < slices_; ++s) {
      torch::Tensor level;
      switch (map_.scheme) {
        case Scheme::kTwoColumn:
        case Scheme::kTwoCrossbar:
          level = slice(a == 0 ? torch::relu(w) : torch::relu(-w), s);
          break;
        case Scheme::kComplementary: {
          // (L, L - d) for w > 0, (L - d, L) for w < 0, (L, L) for w = 0, per slice digit d.
          torch::Tensor d = slice(mag, s);
          torch::Tensor lowered = a == 0 ? w.lt(0) : w.gt(0);
          level = static_cast<double>(L) - d * lowered.to(torch::kFloat32);
          break;
        }
        case Scheme::kOffset:
          level = slice(w + std::ldexp(1.0, map_.weight_bits - 1), s);
          break;
        case Scheme::kPolarized:
          level = slice(mag, s);
          break;
      }
      per_slice.push_back(level);
    }
    comps[static_cast<size_t>(a)] = torch::stack(per_slice, 2).reshape({R, C * slices_});  // column j*S + s
  }
  t.ideal = torch::stack(comps, 0).to(torch::kFloat32);
  if (map_.scheme == Scheme::kOffset) t.unit = torch::ones({R}, kF32);
  if (map_.column_budget > 0 && BudgetApplies()) {
    auto nnz = w.ne(0).sum(0);  // per output column of this crossbar
    const int64_t worst = nnz.max().item<int64_t>();
    if (worst > map_.column_budget) {
      const int64_t c = nnz.argmax().item<int64_t>();
      throw InputError(StrCat("layer ", name_, " exceeds mapping.column_budget = ", map_.column_budget, ": output ",
                              t.cols[static_cast<size_t>(c)], " has ", worst, " non-zero weights on one crossbar; "
                              "compress with compress.column_budget first"));
    }
  }
  // ADC groups: FORMS converts every fragment of m rows; the other schemes the whole column.
  const int64_t g = map_.scheme == Scheme::kPolarized ? map_.fragment_rows : R;
  t.group_rows = g;
  t.groups = (R + g - 1) / g;
  if (map_.scheme == Scheme::kPolarized) {
    torch::Tensor padded = torch::zeros({t.groups * g, C}, kF32);
    padded.narrow(0, 0, R).copy_(w);
    auto frag = padded.view({t.groups, g, C});
    auto has_pos = frag.gt(0).any(1), has_neg = frag.lt(0).any(1);
    auto mixed = has_pos.logical_and(has_neg);
    if (mixed.any().item<bool>()) {
      auto idx = mixed.nonzero()[0];
      const int64_t f = idx[0].item<int64_t>(), c = idx[1].item<int64_t>();
      throw InputError(StrCat("layer ", name_, " is not polarised for the polarized scheme: rows ",
                              t.rows[static_cast<size_t>(f * g)], "..",
                              t.rows[static_cast<size_t>(std::min(R, (f + 1) * g) - 1)], " of output ",
                              t.cols[static_cast<size_t>(c)], " hold weights of both signs; compress with "
                              "compress.polarize_fragment = ", g, " (mapping.fragment_rows) first"));
    }
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
  // Per read column: LSB = 2^(bits needed for the full scale - ADC bits), at least 1 level; a
  // difference read is signed and spends one bit on the sign.
  const int64_t NR = t.reads.size(2);
  const int64_t C = static_cast<int64_t>(t.cols.size());
  std::vector<float> step(static_cast<size_t>(NR)), top(static_cast<size_t>(NR));
  auto fs = full_scale.to(torch::kFloat64).contiguous();
  int64_t col = 0;
  for (const Read& r : reads_) {
    const int64_t width = r.slice < 0 ? 1 : C;
    double read_fs = 0;
    for (int64_t j = 0; j < width; ++j) read_fs = std::max(read_fs, fs[col + j].item<double>());
    const int need = BitsFor(read_fs);
    const int bits = map_.adc_bits > 0 ? map_.adc_bits - (r.difference ? 1 : 0) : need;
    const double lsb = std::ldexp(1.0, std::max(0, need - std::max(bits, 0)));
    const double top_code = std::ldexp(1.0, std::max(bits, 0)) - 1.0;
    for (int64_t j = 0; j < width; ++j) {
      step[static_cast<size_t>(col + j)] = static_cast<float>(lsb);
      top[static_cast<size_t>(col + j)] = static_cast<float>(top_code);
    }
    col += width;
  }
  t.step = torch::tensor(step);
  t.top = torch::tensor(top);
}

void CrossbarLayer::Program(FaultInjector* faults, uint64_t seed, int64_t first_crossbar) {
  torch::NoGradGuard no_grad;
  stuck_ = sa0_ = sa1_ = 0;
  faulty_ = faults != nullptr && faults->active();
  const double L = static_cast<double>(map_.levels());
  const double g0 = 1.0 / (device_.on_off_ratio - 1.0);  // G_min in units of (G_max - G_min)
  const double drift = device_.drift_nu > 0 ? std::pow(device_.drift_time, -device_.drift_nu) : 1.0;
  int64_t crossbar = first_crossbar;
  for (size_t ti = 0; ti < tiles_.size(); ++ti) {
    Tile& t = tiles_[ti];
    const int64_t R = static_cast<int64_t>(t.rows.size()), CS = t.ideal.size(2);
    torch::Tensor eff = t.ideal.clone();
    torch::Tensor unit = t.unit.defined() ? t.unit.clone() : torch::Tensor();
    if (faulty_) {
      // Physical layout: pairs interleave in one crossbar (column 2(jS+s)+a); two-crossbar uses two
      // crossbars (column jS+s each); the offset scheme's unit column follows the weights.
      std::vector<torch::Tensor> states;
      if (map_.scheme == Scheme::kTwoCrossbar) {
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
      // Read noise of a cell is sigma * G; a difference read adds both cells' variances.
      torch::Tensor g2 = (t.ideal + g0).square() * device_.read_noise_sigma * device_.read_noise_sigma;
      torch::Tensor u2 = unit.defined() ? (t.unit + g0).square() * device_.read_noise_sigma * device_.read_noise_sigma
                                        : torch::Tensor();
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
    // ADC range: the worst-case current of the group's rows (all cells at the top level, the
    // largest input digit), or of the column budget's cells where zero weights are empty cells.
    const double digit = std::ldexp(1.0, map_.dac_bits) - 1.0;
    const int64_t rows = std::min(R, t.group_rows);
    const int64_t active = map_.column_budget > 0 && BudgetApplies() ? std::min(rows, map_.column_budget) : rows;
    torch::Tensor fs = torch::full({t.reads.size(2)}, static_cast<double>(active) * L * digit, kF64);
    if (t.unit.defined()) fs[fs.size(0) - 1] = static_cast<double>(rows) * digit;  // unit cells sit at level 1
    SetAdc(t, fs);
    crossbar += map_.scheme == Scheme::kTwoCrossbar ? 2 : 1;
  }
  stuck_ = sa0_ + sa1_;
}

torch::Tensor CrossbarLayer::Reference(const torch::Tensor& xq) const {
  return torch::mm(xq.to(torch::kFloat64), q_.to(torch::kFloat64).t());
}

bool CrossbarLayer::BudgetApplies() const {
  // Only where a zero weight is an empty cell does a budget of non-zeros bound the column current.
  return map_.scheme == Scheme::kTwoColumn || map_.scheme == Scheme::kTwoCrossbar || map_.scheme == Scheme::kPolarized;
}

bool CrossbarLayer::lossless() const {
  if (faulty_ || !device_.ideal()) return false;
  for (const Tile& t : tiles_) {
    if (t.step.gt(1).any().item<bool>()) return false;
  }
  return true;
}

int64_t CrossbarLayer::crossbars() const {
  return static_cast<int64_t>(tiles_.size()) * (map_.scheme == Scheme::kTwoCrossbar ? 2 : 1);
}

int64_t CrossbarLayer::cells() const {
  int64_t n = 0;
  for (const Tile& t : tiles_) {
    const int64_t used_cols = static_cast<int64_t>(t.cols.size()) * slices_ * components_ + (t.unit.defined() ? 1 : 0);
    n += static_cast<int64_t>(t.rows.size()) * used_cols;
  }
  return n;
}

int CrossbarLayer::adc_bits() const {
  int bits = 0;
  for (const Tile& t : tiles_) {
    // bits = log2((top + 1) * step) of the widest read, plus the sign of difference reads.
    auto w = torch::log2((t.top + 1) * t.step).amax().item<float>();
    bits = std::max(bits, static_cast<int>(std::lround(w)));
  }
  return map_.adc_bits > 0 ? map_.adc_bits : bits + (map_.analog_subtract && components_ == 2 ? 1 : 0);
}

void CrossbarLayer::StartCalibration() {
  calibrating_ = true;
  for (Tile& t : tiles_) t.calib = torch::zeros({t.reads.size(2)}, kF32);
}

void CrossbarLayer::FinishCalibration() {
  calibrating_ = false;
  for (Tile& t : tiles_) {
    if (t.calib.defined()) SetAdc(t, t.calib);
  }
}

int64_t CrossbarLayer::Planes(bool signed_inputs) const {
  const int low = signed_inputs ? map_.input_bits - 1 : map_.input_bits;
  return (low + map_.dac_bits - 1) / map_.dac_bits + (signed_inputs ? 1 : 0);
}

void CrossbarLayer::CountReads(const torch::Tensor& xq_in, bool signed_inputs, ReadStats* stats) const {
  torch::NoGradGuard no_grad;
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32);
  const int64_t M = xq.size(0), P = Planes(signed_inputs), m = map_.fragment_rows, v = map_.dac_bits;
  for (const Tile& t : tiles_) {
    const int64_t R = static_cast<int64_t>(t.rows.size());
    stats->adc_conversions += P * M * t.groups * t.reads.size(2);
    // Zero-skipping: per fragment of m rows, cycles up to the highest non-zero input plane.
    const int64_t F = (R + m - 1) / m;
    torch::Tensor xr = xq.index_select(1, Index(t.rows));
    if (F * m != R) xr = torch::constant_pad_nd(xr, {0, F * m - R}, 0);
    torch::Tensor fr = xr.view({M, F, m});
    torch::Tensor planes = torch::ceil(torch::ceil(torch::log2(fr.clamp_min(0).amax(2) + 1)) / static_cast<double>(v));
    if (signed_inputs) planes = torch::where(fr.lt(0).any(2), torch::full_like(planes, static_cast<double>(P)), planes);
    stats->input_cycles += P * M * F;
    stats->input_cycles_needed += static_cast<int64_t>(planes.sum().item<double>());
  }
}

torch::Tensor CrossbarLayer::Forward(const torch::Tensor& xq_in, bool signed_inputs, uint64_t noise_seed,
                                     ReadStats* stats) {
  torch::NoGradGuard no_grad;
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t M = xq.size(0);
  XBAR_CHECK(xq.size(1) == K_, "layer ", name_, " expects ", K_, " inputs, got ", xq.size(1));
  // Input bit-planes and their digital weights.
  const int v = map_.dac_bits, b = map_.input_bits;
  std::vector<torch::Tensor> planes;
  std::vector<double> weight;
  const int low_bits = signed_inputs ? b - 1 : b;
  torch::Tensor u = signed_inputs ? torch::where(xq.lt(0), xq + std::ldexp(1.0, b), xq) : xq;
  for (int shift = 0; shift < low_bits; shift += v) {
    const int width = std::min(v, low_bits - shift);
    planes.push_back(torch::fmod(torch::floor(u / std::ldexp(1.0, shift)), std::ldexp(1.0, width)));
    weight.push_back(std::ldexp(1.0, shift));
  }
  if (signed_inputs) {  // the two's-complement sign bit, shifted and subtracted
    planes.push_back(torch::floor(u / std::ldexp(1.0, b - 1)));
    weight.push_back(-std::ldexp(1.0, b - 1));
  }
  const auto P = static_cast<int64_t>(planes.size());
  XBAR_CHECK(P == Planes(signed_inputs), "plane count");
  torch::Tensor X_all = torch::stack(planes, 0);  // [P, M, K]
  const int64_t M_all = M;
  torch::Tensor out = torch::zeros({M, N_}, kF64);
  torch::Generator gen;
  if (device_.read_noise_sigma > 0) {
    gen = at::detail::createCPUGenerator(DeriveSeed(noise_seed, "read-noise." + name_));
  }
  // Tiles sharing their rows (one column group after another) share the lowered input planes.
  // Positions go in chunks small enough for each crossbar's partial sums to stay in cache.
  constexpr int64_t kChunk = 256;
  for (int64_t m_begin = 0; m_begin < M_all; m_begin += kChunk) {
  const int64_t M = std::min(kChunk, M_all - m_begin);
  torch::Tensor X = X_all.narrow(1, m_begin, M);
  const std::vector<int64_t>* cached_rows = nullptr;
  torch::Tensor xg;
  double* out_p = out.data_ptr<double>() + m_begin * N_;
  for (Tile& t : tiles_) {
    const int64_t R = static_cast<int64_t>(t.rows.size()), C = static_cast<int64_t>(t.cols.size());
    const int64_t G = t.groups, g = t.group_rows, NR = t.reads.size(2);
    if (cached_rows == nullptr || *cached_rows != t.rows || xg.size(2) != g) {
      torch::Tensor xt = X.index_select(2, Index(t.rows));  // [P, M, R]
      if (G * g != R) xt = torch::constant_pad_nd(xt, {0, G * g - R}, 0);
      xg = xt.reshape({P * M, G, g}).permute({1, 0, 2}).contiguous();  // [G, P*M, g]
      cached_rows = &t.rows;
    }
    torch::Tensor sums = torch::bmm(xg, t.reads);  // [G, P*M, NR]: every read of every cycle
    if (t.noise_var.defined()) {
      torch::Tensor sd = torch::bmm(xg.square(), t.noise_var).clamp_min(0).sqrt();
      sums = sums + sd * at::normal(torch::zeros_like(sd), 1.0, gen);
    }
    if (calibrating_) t.calib = torch::maximum(t.calib, sums.abs().amax({0, 1}));
    sums = sums.contiguous();
    // Per read column: ADC 1/LSB, code range and the digital weight of a code (LSB x slice shift x
    // pair sign or bias), times the fragment sign for polarized crossbars: [G, NR].
    std::vector<float> inv(static_cast<size_t>(NR)), lo(static_cast<size_t>(NR)), hi(static_cast<size_t>(NR));
    std::vector<double> scale(static_cast<size_t>(G * NR));
    const int64_t weight_cols = (NR / C) * C;  // the offset scheme's unit column comes last
    {
      auto st = t.step.accessor<float, 1>();
      auto tp = t.top.accessor<float, 1>();
      int64_t col = 0;
      for (const Read& r : reads_) {
        const int64_t width = r.slice < 0 ? 1 : C;
        for (int64_t j = 0; j < width; ++j, ++col) {
          const auto cs = static_cast<size_t>(col);
          inv[cs] = 1.0f / st[col];  // a power of two: exact
          hi[cs] = tp[col];
          lo[cs] = r.difference ? -(tp[col] + 1) : 0.0f;
          for (int64_t gi = 0; gi < G; ++gi) {
            const double sg = t.sign.defined() && r.slice >= 0 ? t.sign[gi][j].item<float>() : 1.0;
            scale[static_cast<size_t>(gi * NR + col)] = static_cast<double>(st[col]) * r.coef * sg;
          }
        }
      }
    }
    const float* sp = sums.data_ptr<float>();
    std::vector<int64_t> out_col(t.cols);
    // ADC, shift-and-add and scatter in one pass; positions are independent, so the result does not
    // depend on the number of threads.
    at::parallel_for(0, M, 64, [&](int64_t m0, int64_t m1) {
      std::vector<double> acc(static_cast<size_t>(C));
      std::vector<float> code(static_cast<size_t>(NR));
      for (int64_t m = m0; m < m1; ++m) {
        std::fill(acc.begin(), acc.end(), 0.0);
        double unit = 0.0;
        for (int64_t gi = 0; gi < G; ++gi) {
          const double* sc = scale.data() + gi * NR;
          for (int64_t p = 0; p < P; ++p) {
            const float* row = sp + (gi * P * M + p * M + m) * NR;
            const double pw = weight[static_cast<size_t>(p)];
            for (int64_t c = 0; c < NR; ++c) {
              code[static_cast<size_t>(c)] = std::min(hi[static_cast<size_t>(c)],
                                                      std::max(lo[static_cast<size_t>(c)], std::nearbyint(row[c] * inv[static_cast<size_t>(c)])));
            }
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
  }
  if (stats != nullptr) CountReads(xq, signed_inputs, stats);
  return out;
}

}  // namespace xbar
