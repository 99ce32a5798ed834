// The ADC (SPEC §1): the last read-side stage. Per read, a linear converter whose top code sits at
// the read's full scale (the largest of its columns'), LSB = full scale / top code, and at least
// one level (integer sums are then exact); a difference read is signed and spends one bit on the
// sign. Lossless (LSB 1) when the ADC has the bits the full scale needs. The full scale is the
// worst case (every cell at the top level, every input digit at its largest), or, with
// mapping.adc_range: calibrated, what the programmed crossbars produce on calibration images
// (mapping.adc_percentile of |partial sums| per read column, at most the largest seen).
#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"
#include "xbar/crossbar/stage.h"

namespace xbar {

void AdcStage::SetRanges(CrossbarTile& t, const torch::Tensor& full_scale, const StageContext& ctx) const {
  const MappingSpec& map = ctx.map;
  const int64_t NR = t.read_columns(), C = t.num_cols();
  std::vector<float> step(static_cast<size_t>(NR)), top(static_cast<size_t>(NR));
  torch::Tensor fs = full_scale.to(torch::kFloat64).contiguous();
  const double* fsp = fs.data_ptr<double>();
  int64_t col = 0;
  for (const ReadSpec& r : ctx.reads) {
    const int64_t width = r.Width(C);
    double read_fs = 0;
    for (int64_t j = 0; j < width; ++j) read_fs = std::max(read_fs, fsp[col + j]);
    const int need = BitsFor(read_fs);
    const int bits = map.adc_bits > 0 ? std::min(map.adc_bits - (r.difference ? 1 : 0), need) : need;
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
  // pair sign or bias), times the fragment sign for polarized crossbars and -1 for a flipped
  // column (the unit column's read then carries its L x input sum, CrossbarTile::unit_gain): [G, NR].
  t.adc_inv.assign(static_cast<size_t>(NR + kConvertPad), 0.0f);
  t.adc_lo.assign(static_cast<size_t>(NR + kConvertPad), 0.0f);
  t.adc_hi.assign(static_cast<size_t>(NR + kConvertPad), 0.0f);
  t.adc_scale.assign(static_cast<size_t>(t.groups * NR), 0.0);
  torch::Tensor sign = t.sign.defined() ? t.sign.contiguous() : torch::Tensor();
  t.adc_code_max = 0;
  col = 0;
  for (const ReadSpec& r : ctx.reads) {
    const int64_t width = r.Width(C);
    for (int64_t j = 0; j < width; ++j, ++col) {
      const auto cs = static_cast<size_t>(col);
      t.adc_inv[cs] = 1.0f / step[cs];
      t.adc_hi[cs] = top[cs];
      t.adc_lo[cs] = r.difference ? -(top[cs] + 1) : 0.0f;
      t.adc_code_max = std::max({t.adc_code_max, std::fabs(t.adc_lo[cs]), std::fabs(t.adc_hi[cs])});
      for (int64_t gi = 0; gi < t.groups; ++gi) {
        double sg = sign.defined() && r.slice >= 0 ? sign.data_ptr<float>()[gi * C + j] : 1.0;
        if (!t.flipped.empty() && t.flipped[cs] != 0) sg = -sg;  // flipped encoding: L x input sum - read
        t.adc_scale[static_cast<size_t>(gi * NR + col)] = static_cast<double>(step[cs]) * r.coef * sg;
      }
    }
  }
}

void AdcStage::Prepare(CrossbarTile& t, const TileCells& /*cells*/, const StageContext& ctx) const {
  // The worst-case current of the group's rows (MappingSpec::ReadFullScale, as the planner uses).
  const int64_t rows = std::min(t.num_rows(), t.group_rows);
  torch::Tensor fs = torch::full({t.read_columns()}, ctx.map.ReadFullScale(rows), torch::kFloat64);
  const double digit = std::ldexp(1.0, ctx.map.dac_bits) - 1.0;
  if (t.unit.defined()) fs[fs.size(0) - 1] = static_cast<double>(rows) * digit;  // unit cells sit at level 1
  t.worst_fs = fs;
  t.calib = torch::Tensor();
  t.calib_hist.clear();
  SetRanges(t, fs, ctx);
}

void AdcStage::StartCalibration(CrossbarTile& t, const StageContext& ctx) const {
  t.calib = torch::zeros({t.read_columns()}, torch::kFloat32);
  t.calib_hist.assign(ctx.map.adc_percentile < 100 ? ctx.reads.size() * kCalibrationBins : 0, 0);
}

namespace {

// Adds |sums| of rows [n][stride] to each read's histogram over [0, worst-case full scale] (larger
// ones, which variation can produce, count in the last bin): row i counted counts[i] times (once
// without counts).
void AddToHistograms(CrossbarTile& t, const float* sums, int64_t n, int64_t stride, const int64_t* counts,
                     const StageContext& ctx) {
  constexpr int64_t kBins = AdcStage::kCalibrationBins;
  const int64_t C = t.num_cols();
  const double* wf = t.worst_fs.data_ptr<double>();
  int64_t col = 0;
  for (size_t ri = 0; ri < ctx.reads.size(); ++ri) {
    const int64_t width = ctx.reads[ri].Width(C);
    int64_t* hist = t.calib_hist.data() + ri * kBins;
    const double scale = static_cast<double>(kBins) / std::max(wf[col], 1.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t count = counts == nullptr ? 1 : counts[i];
      if (count == 0) continue;
      const float* row = sums + i * stride + col;
      for (int64_t j = 0; j < width; ++j) {
        const auto b = static_cast<int64_t>(static_cast<double>(std::fabs(row[j])) * scale);
        hist[std::min<int64_t>(b, kBins - 1)] += count;
      }
    }
    col += width;
  }
}

}  // namespace

void AdcStage::Record(CrossbarTile& t, const torch::Tensor& sums, const StageContext& ctx) const {
  // sums: [G, rows, NR]. The largest |partial sum| per read column, and with a percentile below
  // 100 a histogram of |partial sums| per read.
  torch::Tensor a = sums.abs();
  t.calib = torch::maximum(t.calib, a.amax({0, 1}));
  if (t.calib_hist.empty()) return;
  const int64_t NR = a.size(2), rows = a.size(0) * a.size(1);
  torch::Tensor flat = a.reshape({rows, NR}).contiguous();
  AddToHistograms(t, flat.data_ptr<float>(), rows, NR, nullptr, ctx);
}

void AdcStage::RecordPatterns(CrossbarTile& t, const float* sums, int64_t stride, int64_t patterns,
                              const std::vector<int64_t>& counts, const StageContext& ctx) const {
  const int64_t NR = t.read_columns();
  XBAR_CHECK(static_cast<int64_t>(counts.size()) == t.groups * patterns, "pattern counts");
  torch::Tensor most = torch::zeros({NR}, torch::kFloat32);
  float* mp = most.data_ptr<float>();
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] == 0) continue;
    const float* row = sums + static_cast<int64_t>(e) * stride;
    for (int64_t c = 0; c < NR; ++c) mp[c] = std::max(mp[c], std::fabs(row[c]));
  }
  t.calib = torch::maximum(t.calib, most);
  if (t.calib_hist.empty()) return;
  AddToHistograms(t, sums, static_cast<int64_t>(counts.size()), stride, counts.data(), ctx);
}

void AdcStage::FinishCalibration(CrossbarTile& t, const StageContext& ctx) const {
  if (!t.calib.defined()) return;
  torch::Tensor fs = t.calib.to(torch::kFloat64).contiguous();
  if (!t.calib_hist.empty()) {
    // Each read's full scale: the upper edge of the histogram bin holding its percentile, at most
    // the largest value seen.
    double* fp = fs.data_ptr<double>();
    const double* wf = t.worst_fs.data_ptr<double>();
    const int64_t C = t.num_cols();
    int64_t col = 0;
    for (size_t ri = 0; ri < ctx.reads.size(); ++ri) {
      const int64_t width = ctx.reads[ri].Width(C);
      const int64_t* hist = t.calib_hist.data() + ri * kCalibrationBins;
      int64_t total = 0;
      for (int64_t b = 0; b < kCalibrationBins; ++b) total += hist[b];
      const double want = std::ceil(static_cast<double>(total) * ctx.map.adc_percentile / 100.0);
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
  SetRanges(t, fs, ctx);
}

bool AdcStage::Lossless(const CrossbarTile& t) const { return !t.step.gt(1).any().item<bool>(); }

}  // namespace xbar
