#include "xbar/crossbar/layer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <unordered_set>

#include "xbar/core/error.h"
#include "xbar/crossbar/faults.h"
#include "xbar/crossbar/kernels.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/reference.h"

namespace xbar {
namespace {

const auto kF32 = torch::TensorOptions().dtype(torch::kFloat32);
const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

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
  reads_ = ReadsOf(map);
  levels_ = LevelTable(map);
  weight_stages_ = BuildWeightStages(map, device);
  chain_ = BuildReadStages(map, device);

  // Tiling with masked mapping (plan.h); level quantisation: the scheme's cell levels per tile.
  for (TileLayout& layout : LayoutTiles(q_, map)) {
    CheckTile(name_, q_, layout, map);
    CrossbarTile t;
    t.rows = std::move(layout.rows);
    t.cols = std::move(layout.cols);
    t.rows_contiguous = RowsContiguous(t);
    EncodeTile(t, q_, levels_, map_);
    tiles_.push_back(std::move(t));
  }
  // Tiles with the same rows next to each other, so Forward lowers each row set once.
  std::stable_sort(tiles_.begin(), tiles_.end(),
                   [](const CrossbarTile& a, const CrossbarTile& b) { return a.rows < b.rows; });
  Program(nullptr, 0, 0);
}

void CrossbarLayer::Program(FaultInjector* faults, uint64_t seed, int64_t first_crossbar,
                            const std::vector<double>* input_moments) {
  torch::NoGradGuard no_grad;
  XBAR_CHECK(input_moments == nullptr || static_cast<int64_t>(input_moments->size()) == K_, "layer ", name_, ": ",
             input_moments->size(), " input moments for ", K_, " rows");
  sa0_ = sa1_ = 0;
  placement_seconds_ = harm_before_ = harm_after_ = 0;
  current_nominal_ = current_effective_ = 0;
  changed_ = false;
  const StageContext ctx = Context(faults, seed, input_moments);
  // Every draw is keyed by its crossbar or tile, so the tiles are programmed in parallel; what they
  // report is summed in tile order afterwards, and the first failing tile's error is thrown, as on
  // one thread.
  const auto T = static_cast<int64_t>(tiles_.size());
  std::vector<TileCells> report(tiles_.size());
  std::vector<std::exception_ptr> error(tiles_.size());
  at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      try {
        CrossbarTile& t = tiles_[static_cast<size_t>(ti)];
        TileCells& cells = report[static_cast<size_t>(ti)];
        cells.source = &t;
        cells.tile = ti;
        cells.first_crossbar = first_crossbar + ti * map_.scheme->ArraysPerTile();
        for (const auto& stage : weight_stages_) stage->Apply(cells, ctx);
        for (const auto& stage : chain_.stages) stage->Program(cells, ctx);
        t.reads = AssembleReads(t, reads_, cells.read_levels.defined() ? cells.read_levels : cells.levels,
                                cells.read_levels.defined() ? cells.read_unit : cells.unit, map_.slices());
        t.noise_var = torch::Tensor();
        for (const auto& stage : chain_.stages) stage->Prepare(t, cells, ctx);
        t.words = -1;  // packed on the first Forward that needs it
        t.placement = std::move(cells.placement);
        cells.levels = cells.unit = cells.read_levels = cells.read_unit = torch::Tensor();  // only the counts stay
      } catch (...) {
        error[static_cast<size_t>(ti)] = std::current_exception();
      }
    }
  });
  for (const std::exception_ptr& e : error) {
    if (e) std::rethrow_exception(e);
  }
  for (size_t ti = 0; ti < tiles_.size(); ++ti) {
    const TileCells& cells = report[ti];
    sa0_ += cells.sa0;
    sa1_ += cells.sa1;
    placement_seconds_ += cells.placement_seconds;
    harm_before_ += tiles_[ti].placement.cost_before;
    harm_after_ += tiles_[ti].placement.cost_after;
    current_nominal_ += cells.current_nominal;
    current_effective_ += cells.current_effective;
    changed_ = changed_ || cells.changed;
  }
}

void CrossbarLayer::SetSumKernel(SumKernel k) {
  kernel_ = k;
  for (CrossbarTile& t : tiles_) t.kernel = 0;
}

int64_t CrossbarLayer::packed_tiles() const {
  int64_t n = 0;
  for (const CrossbarTile& t : tiles_) {
    const bool packable = t.words > 0;
    n += packable && (kernel_ == SumKernel::kPacked || (kernel_ == SumKernel::kAuto && t.kernel == 2)) ? 1 : 0;
  }
  return n;
}

CrossbarLayer::KernelWork CrossbarLayer::PackedWork(int64_t positions, bool signed_inputs) const {
  KernelWork w;
  const auto rows = static_cast<double>(positions * map_.InputCycles(signed_inputs));
  for (const CrossbarTile& t : tiles_) {
    if (t.words <= 0) continue;
    const double conversions = rows * static_cast<double>(t.groups * t.read_columns());
    w.conversions += conversions;
    w.popcount_words += conversions * static_cast<double>(t.plane_shift.size() * map_.dac_bits * t.words);
  }
  return w;
}

torch::Tensor CrossbarLayer::Reference(const torch::Tensor& xq) const { return ReferenceMvm(q_, xq); }

bool CrossbarLayer::lossless() const {
  // No weight-side stage moved a cell, no read stage changes the integer sums, every ADC is lossless.
  if (changed_ || !chain_.exact()) return false;
  for (const CrossbarTile& t : tiles_) {
    if (!chain_.adc->Lossless(t)) return false;
  }
  return true;
}

torch::Tensor CrossbarLayer::FoldedWeights() const {
  torch::NoGradGuard no_grad;
  if (!chain_.exact()) return {};
  // Whether every crossbar folds, before the [N, K] float64 result is allocated (a lossy ADC, the
  // usual case in a fault campaign, answers no for each chip without it).
  for (const CrossbarTile& t : tiles_) {
    if (!chain_.adc->Lossless(t)) return {};
  }
  torch::Tensor w = torch::zeros({N_, K_}, kF64);
  double* wp = w.data_ptr<double>();
  for (const CrossbarTile& t : tiles_) {
    const torch::Tensor reads = t.reads.to(torch::kCPU, torch::kFloat64).contiguous();  // [G, g, NR]
    if (!reads.eq(reads.round()).all().item<bool>()) return {};
    const int64_t G = t.groups, g = t.group_rows, NR = t.read_columns(), C = t.num_cols(), R = t.num_rows();
    const int64_t weight_cols = NR - (t.unit.defined() ? 1 : 0);  // the offset scheme's unit column comes last
    const double* rp = reads.data_ptr<double>();
    // Forward: code = row · inv (lossless: exact), out[j] += Σ code[c0 + j] · scale[c0 + j] + Σ unit
    // codes · scale, per group, with x = Σ_p weight_p · digit_p: linear in x row by row.
    for (int64_t gi = 0; gi < G; ++gi) {
      const double* sc = t.adc_scale.data() + gi * NR;
      for (int64_t rr = 0; rr < g; ++rr) {
        const int64_t r = gi * g + rr;
        if (r >= R) break;  // padding rows: no input
        const double* row = rp + r * NR;
        const int64_t k = t.rows[static_cast<size_t>(r)];
        double unit = 0;
        for (int64_t c = weight_cols; c < NR; ++c) unit += row[c] * static_cast<double>(t.adc_inv[static_cast<size_t>(c)]) * sc[c];
        for (int64_t j = 0; j < C; ++j) {
          double sum = t.unit_gain.empty() ? unit : unit * t.unit_gain[static_cast<size_t>(j)];
          for (int64_t c0 = 0; c0 < weight_cols; c0 += C) {
            sum += row[c0 + j] * static_cast<double>(t.adc_inv[static_cast<size_t>(c0 + j)]) * sc[c0 + j];
          }
          wp[t.cols[static_cast<size_t>(j)] * K_ + k] += sum;
        }
      }
    }
  }
  return w;
}

int64_t CrossbarLayer::crossbars() const {
  return static_cast<int64_t>(tiles_.size()) * map_.scheme->ArraysPerTile();
}

int64_t CrossbarLayer::TileColumns(const CrossbarTile& t) const {
  return t.num_cols() * map_.slices() * map_.scheme->Components() + (t.unit.defined() ? 1 : 0);
}

int64_t CrossbarLayer::cells() const {
  int64_t n = 0;
  for (const CrossbarTile& t : tiles_) n += t.num_rows() * TileColumns(t);
  return n;
}

int64_t CrossbarLayer::used_rows() const {
  int64_t n = 0;
  for (const CrossbarTile& t : tiles_) n += t.num_rows();
  return n * map_.scheme->ArraysPerTile();  // each array of a pair has its drivers
}

int64_t CrossbarLayer::used_columns() const {
  int64_t n = 0;
  for (const CrossbarTile& t : tiles_) n += TileColumns(t);
  return n;
}

double CrossbarLayer::level_sum() const {
  double sum = 0;
  for (const CrossbarTile& t : tiles_) {
    sum += t.ideal.sum().item<double>();
    if (t.unit.defined()) sum += t.unit.sum().item<double>();
  }
  return sum;
}

int CrossbarLayer::adc_bits() const {
  // The converter the hardware description gives the widest read (mapping.adc_bits, at most what
  // the read needs losslessly); a calibrated range moves its LSB, not its bits.
  int bits = 0;
  for (const CrossbarTile& t : tiles_) bits = std::max(bits, map_.AdcBits(std::min(t.num_rows(), t.group_rows)));
  return bits;
}

void CrossbarLayer::StartCalibration() {
  calibrating_ = true;
  const StageContext ctx = Context();
  for (CrossbarTile& t : tiles_) chain_.adc->StartCalibration(t, ctx);
}

void CrossbarLayer::FinishCalibration() {
  calibrating_ = false;
  const StageContext ctx = Context();
  for (CrossbarTile& t : tiles_) chain_.adc->FinishCalibration(t, ctx);
}

void CrossbarLayer::CountReads(const torch::Tensor& xq_in, bool signed_inputs, ReadStats* stats) const {
  torch::NoGradGuard no_grad;
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32);
  const int64_t M = xq.size(0), P = map_.InputCycles(signed_inputs), m = map_.fragment_rows, v = map_.dac_bits;
  CountReads(M, signed_inputs, [&](const std::vector<int64_t>& rows) {
    const int64_t R = static_cast<int64_t>(rows.size()), F = (R + m - 1) / m;
    torch::Tensor xr = xq.index_select(1, IndexTensor(rows));
    if (F * m != R) xr = torch::constant_pad_nd(xr, {0, F * m - R}, 0);
    // A fragment needs the cycles of its most demanding input (planes are monotone in the value).
    return PlanesNeeded(xr, static_cast<int>(v), P, 0).view({M, F, m}).amax(2).sum().item<int64_t>();
  }, stats);
}

void CrossbarLayer::CountReads(int64_t M, bool signed_inputs,
                               const std::function<int64_t(const std::vector<int64_t>& rows)>& needed,
                               ReadStats* stats) const {
  const int64_t P = map_.InputCycles(signed_inputs), m = map_.fragment_rows;
  const std::vector<int64_t>* last_rows = nullptr;  // tiles with the same rows sit next to each other
  int64_t last_needed = 0;
  for (const CrossbarTile& t : tiles_) {
    const int64_t R = t.num_rows();
    stats->adc_conversions += P * M * t.groups * t.read_columns();
    // Zero-skipping: per fragment of m rows, cycles up to the highest non-zero input plane.
    const int64_t F = (R + m - 1) / m;
    stats->input_cycles += P * M * F;
    if (last_rows == nullptr || *last_rows != t.rows) {
      last_needed = needed(t.rows);
      last_rows = &t.rows;
    }
    stats->input_cycles_needed += last_needed;
  }
}

torch::Tensor PlanesNeeded(const torch::Tensor& xq, int dac_bits, int64_t P, int64_t pad) {
  const torch::Tensor x = xq.to(torch::kCPU, torch::kFloat32).contiguous();
  const bool conv = x.dim() == 4;
  const int64_t rows = conv ? x.size(0) * x.size(1) * x.size(2) : x.size(0);
  const int64_t W = x.size(x.dim() - 1);
  const int64_t H = conv ? x.size(2) : 1;
  const int64_t Wp = W + 2 * pad;
  torch::Tensor need = conv ? torch::zeros({x.size(0), x.size(1), H + 2 * pad, Wp}, torch::kUInt8)
                            : torch::empty({x.size(0), W}, torch::kUInt8);
  const float* xp = x.data_ptr<float>();
  uint8_t* np = need.data_ptr<uint8_t>();
  const uint8_t all = static_cast<uint8_t>(P);
  if (!conv || pad == 0) {  // the same layout in and out: long runs
    at::parallel_for(0, rows * W, 32768, [&](int64_t i0, int64_t i1) {
      PlanesOfRow(xp + i0, np + i0, i1 - i0, dac_bits, all);
    });
    return need;
  }
  // Padded: a plane at a time into a buffer (one long run), then its rows into place.
  const int64_t planes = x.size(0) * x.size(1), Hp = H + 2 * pad;
  at::parallel_for(0, planes, 16, [&](int64_t q0, int64_t q1) {
    std::vector<uint8_t> buf(static_cast<size_t>(H * W));
    for (int64_t q = q0; q < q1; ++q) {
      PlanesOfRow(xp + q * H * W, buf.data(), H * W, dac_bits, all);
      for (int64_t r = 0; r < H; ++r) std::memcpy(np + (q * Hp + r + pad) * Wp + pad, buf.data() + r * W, W);
    }
  });
  return need;
}

torch::Tensor CrossbarLayer::ForwardTensor(const torch::Tensor& xq_in, bool signed_inputs, uint64_t noise_seed,
                                           ReadStats* stats, int64_t first_mvm) {
  // The engine of Forward as whole-batch tensor ops, in the same order of floating-point operations
  // (GPU design: docs/BENCHMARKS.md, "The engine as tensor ops"):
  //   sums[G, P·M, NR] = bmm(digits at the tile's rows, reads)      (exact on integer cells)
  //   read stages (noise) on the CPU, as Forward applies them        (pure functions of the MVM)
  //   code = clamp(round(sums · inv), lo, hi)                        (float32, per read column)
  //   S = scale · Σ_p weight_p · code_p                              (float64; the sum is exact)
  //   out[:, col_j] += Σ_gi Σ_blocks S[gi, :, block + j] + unit      (tile by tile, in order)
  torch::NoGradGuard no_grad;
  const torch::Device dev = xq_in.device();
  const torch::Tensor xq = xq_in.to(torch::kFloat32).contiguous();
  const int64_t M = xq.size(0);
  XBAR_CHECK(xq.size(1) == K_, "layer ", name_, " expects ", K_, " inputs, got ", xq.size(1));
  const DacStage::Planes planes = chain_.dac->PlanesOf(signed_inputs);
  const int64_t P = planes.size();
  const torch::Tensor X = chain_.dac->Split(xq, signed_inputs, planes);  // [P, M, K] on dev
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor out = torch::zeros({M, N_}, f64.device(dev));
  const StageContext ctx = Context();
  // Consecutive crossbars on the same rows (one column group after another) with the same shape
  // and disjoint outputs go through one bmm and one pass of each ADC op (their read matrices and
  // tables side by side): fewer, larger kernels on a GPU. Read stages and calibration go crossbar
  // by crossbar.
  const bool per_tile = !chain_.stages.empty() || calibrating_;
  for (size_t first = 0; first < tiles_.size();) {
    CrossbarTile& t = tiles_[first];
    const int64_t C = t.num_cols(), G = t.groups, g = t.group_rows, NR = t.read_columns();
    const int64_t weight_cols = NR - (t.unit.defined() ? 1 : 0);  // the offset scheme's unit column last
    size_t last = first + 1;
    std::vector<int64_t> cols = t.cols;
    std::unordered_set<int64_t> seen(cols.begin(), cols.end());
    for (; !per_tile && last < tiles_.size(); ++last) {
      const CrossbarTile& u = tiles_[last];
      if (u.rows != t.rows || u.groups != G || u.group_rows != g || u.read_columns() != NR || u.num_cols() != C) break;
      bool disjoint = true;
      for (int64_t c : u.cols) disjoint = disjoint && seen.count(c) == 0;
      if (!disjoint) break;
      seen.insert(u.cols.begin(), u.cols.end());
      cols.insert(cols.end(), u.cols.begin(), u.cols.end());
    }
    const int64_t T = static_cast<int64_t>(last - first);
    std::vector<torch::Tensor> reads, inv, lo, hi, scale;
    for (size_t i = first; i < last; ++i) {
      CrossbarTile& u = tiles_[i];
      reads.push_back(u.reads.to(dev, torch::kFloat32));
      inv.push_back(torch::from_blob(u.adc_inv.data(), {NR}, f32));
      lo.push_back(torch::from_blob(u.adc_lo.data(), {NR}, f32));
      hi.push_back(torch::from_blob(u.adc_hi.data(), {NR}, f32));
      scale.push_back(torch::from_blob(u.adc_scale.data(), {G, 1, NR}, f64));
    }
    torch::Tensor xt = X.index_select(2, IndexTensor(t.rows).to(dev));  // [P, M, R]
    if (G * g != t.num_rows()) xt = torch::constant_pad_nd(xt, {0, G * g - t.num_rows()}, 0);
    torch::Tensor xg = xt.reshape({P * M, G, g}).permute({1, 0, 2}).contiguous();  // [G, P*M, g]
    torch::Tensor sums = torch::bmm(xg, T == 1 ? reads[0] : torch::cat(reads, 2));  // [G, P*M, T*NR]
    if (per_tile) {
      // The read stages and the ADC's range recording run on the CPU tensors, as in Forward.
      torch::Tensor xg_cpu = xg.cpu(), sums_cpu = sums.cpu().contiguous();
      const ReadBatch batch{noise_seed, static_cast<int64_t>(first), P, M, first_mvm};
      for (const auto& stage : chain_.stages) stage->Apply(t, xg_cpu, sums_cpu, ctx, batch);
      if (calibrating_) chain_.adc->Record(t, sums_cpu, ctx);
      sums = sums_cpu.to(dev);
    }
    // ADC: the tables the adc stage set, per read column.
    const torch::Tensor codes = torch::clamp(torch::round(sums * torch::cat(inv).to(dev)), torch::cat(lo).to(dev),
                                             torch::cat(hi).to(dev))
                                    .view({G, P, M, T * NR});
    torch::Tensor S = torch::zeros({G, M, T * NR}, f64.device(dev));
    for (int64_t p = 0; p < P; ++p) S.add_(codes.select(1, p).to(torch::kFloat64) * planes.weight[static_cast<size_t>(p)]);
    S.mul_(torch::cat(scale, 2).to(dev));
    // Each output's reads added in the engine's order: group by group, column block by block.
    const torch::Tensor S4 = S.view({G, M, T, NR});
    torch::Tensor acc = torch::zeros({M, T, C}, f64.device(dev));
    torch::Tensor unit = torch::zeros({M, T, 1}, f64.device(dev));
    for (int64_t gi = 0; gi < G; ++gi) {
      const torch::Tensor Sg = S4.select(0, gi);  // [M, T, NR]
      for (int64_t c0 = 0; c0 < weight_cols; c0 += C) acc.add_(Sg.narrow(2, c0, C));
      for (int64_t c = weight_cols; c < NR; ++c) unit.add_(Sg.narrow(2, c, 1));
    }
    bool flipped = false;
    for (size_t i = first; i < last; ++i) flipped = flipped || !tiles_[i].unit_gain.empty();
    if (flipped) {
      // Flipped encoding: each output's factor on the unit column's contribution.
      torch::Tensor gain = torch::ones({1, T, C}, f64);
      for (size_t i = first; i < last; ++i) {
        if (!tiles_[i].unit_gain.empty()) {
          gain[0][static_cast<int64_t>(i - first)].copy_(torch::from_blob(tiles_[i].unit_gain.data(), {C}, f64));
        }
      }
      unit = unit * gain.to(dev);
    }
    out.index_add_(1, IndexTensor(cols).to(dev), (acc + unit).reshape({M, T * C}));
    first = last;
  }
  if (stats != nullptr) CountReads(xq.cpu(), signed_inputs, stats);
  return out;
}

torch::Tensor CrossbarLayer::Forward(const torch::Tensor& xq_in, bool signed_inputs, uint64_t noise_seed,
                                     ReadStats* stats, int64_t first_mvm) {
  torch::NoGradGuard no_grad;
  if (kernel_ == SumKernel::kTensor) return ForwardTensor(xq_in, signed_inputs, noise_seed, stats, first_mvm);
  torch::Tensor xq = xq_in.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t M_all = xq.size(0);
  XBAR_CHECK(xq.size(1) == K_, "layer ", name_, " expects ", K_, " inputs, got ", xq.size(1));
  // DAC: input bit-planes [P, M, K] and their digital weights.
  const DacStage::Planes planes = chain_.dac->PlanesOf(signed_inputs);
  const int64_t P = planes.size();
  const int v = map_.dac_bits;
  const InputDigits digits{planes.shift.data(), planes.mask.data(), P, signed_inputs, int64_t{1} << map_.input_bits};
  if (kernel_ != SumKernel::kFloat) {
    at::parallel_for(0, static_cast<int64_t>(tiles_.size()), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t i = t0; i < t1; ++i) {
        if (tiles_[static_cast<size_t>(i)].words < 0) PackReads(tiles_[static_cast<size_t>(i)], v);
      }
    });
  }
  // A crossbar that runs bit-packed counts its column sums from packed input digits inside the ADC
  // pass (fused); the others need the DAC's planes as floats.
  auto fused_kernel = [&](const CrossbarTile& t) {
    return t.words > 0 && !calibrating_ &&
           (kernel_ == SumKernel::kPacked || (kernel_ == SumKernel::kAuto && t.kernel == 2));
  };
  std::vector<char> row_bits_fit(tiles_.size()), contiguous(tiles_.size()), int_codes(tiles_.size());
  for (size_t i = 0; i < tiles_.size(); ++i) {
    const CrossbarTile& t = tiles_[i];
    row_bits_fit[i] = static_cast<char>(RowBitsFit(t));
    contiguous[i] = static_cast<char>(t.rows_contiguous);
    int_codes[i] = static_cast<char>(CodesFitInt32(t.adc_code_max, planes.weight));
  }
  torch::Tensor out = torch::empty({M_all, N_}, kF64);  // every chunk writes all of its rows
  const StageContext ctx = Context();
  const bool per_pattern = chain_.per_pattern();
  const int64_t KW = (K_ + 63) / 64;
  // Positions go in chunks small enough for each crossbar's partial sums to stay in cache; chunks
  // are independent (disjoint output rows, read noise keyed by MVM), so they run in parallel and
  // the result does not depend on the number of threads or the chunk size. Within a chunk, tiles
  // sharing their rows (one column group after another) share the lowered or packed inputs. A
  // layer of a few hundred positions (a batch-1 convolution late in a network) goes, on T > 1
  // threads, in about 4T chunks of 32 or more, so that the threads share out whole chunks rather
  // than meeting after every crossbar (docs/BENCHMARKS.md, two threads against one). One thread,
  // calibration and the call that picks each crossbar's kernel (by timing both on the first chunk)
  // keep chunks of 256.
  // A layer of few positions (a batch-1 classifier: one; a batch-1 deep convolution: 64) is one
  // chunk, and there the threads take whole crossbars instead, each writing its own outputs, which
  // are then added in crossbar order: the same additions in the same order as one thread.
  constexpr int64_t kFewPositions = 64;
  bool undecided = false;
  for (const CrossbarTile& t : tiles_) undecided |= kernel_ == SumKernel::kAuto && t.words > 0 && t.kernel == 0;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t chunk_size = calibrating_ || undecided || M_all <= kFewPositions || threads == 1
                             ? 256
                             : std::clamp<int64_t>((M_all / (4 * threads) + 15) / 16 * 16, 32, 256);
  const bool tile_parallel = !calibrating_ && M_all <= kFewPositions && tiles_.size() > 1 && threads > 1;
  // What a run of crossbars reuses from the crossbar before it: lowered float inputs and packed
  // input digits for the same rows.
  struct InputCache {
    const std::vector<int64_t>* cached_rows = nullptr;
    const std::vector<int64_t>* packed_rows = nullptr;
    int64_t packed_g = 0, packed_G = 0;
    torch::Tensor xg;
    std::vector<uint64_t> xbits;
  };
  auto run_chunk = [&](int64_t chunk) {
    const int64_t m_begin = chunk * chunk_size;
    const int64_t M = std::min(chunk_size, M_all - m_begin);
    // The chunk's input planes [P, M, K] as floats, made when a crossbar of the chunk first needs
    // them (the fused crossbars never do): per chunk, so that a large batch does not hold every
    // plane of every position at once (8-bit inputs: 32 bytes per input).
    torch::Tensor X;
    auto chunk_planes = [&]() {
      if (!X.defined()) X = chain_.dac->Split(xq.narrow(0, m_begin, M), signed_inputs, planes);
    };
    std::vector<uint64_t> row_bits;
    // The chunk's outputs, output-major while the tiles add to them (a position's outputs are
    // far apart in `out`; one output's positions are adjacent here), then copied out.
    std::vector<double> out_t(static_cast<size_t>(N_ * M), 0.0);
    const float* x_chunk = xq.data_ptr<float>() + m_begin * K_;
    // The chunk's inputs bit-packed whole, once (before the crossbars when they run in parallel).
    auto pack_rows = [&]() {
      if (row_bits.empty()) row_bits = PackRowBits(x_chunk, M, K_, digits, v);
    };
    // One crossbar's outputs for the chunk's positions, added at dst[o * M + m], o its output
    // column (t.cols[j]), or j itself when it writes to a buffer of its own (own_outputs).
    auto run_tile = [&](CrossbarTile& t, InputCache& cache, double* dst, bool own_outputs) {
      const std::vector<int64_t>*& cached_rows = cache.cached_rows;
      const std::vector<int64_t>*& packed_rows = cache.packed_rows;
      int64_t& packed_g = cache.packed_g;
      int64_t& packed_G = cache.packed_G;
      torch::Tensor& xg = cache.xg;
      std::vector<uint64_t>& xbits = cache.xbits;
      const int64_t C = t.num_cols();
      const int64_t G = t.groups, g = t.group_rows, NR = t.read_columns();
      const auto ti = static_cast<size_t>(&t - tiles_.data());
      const bool fits = row_bits_fit[ti] != 0;
      // The chunk's inputs at this tile's rows (shared by tiles with the same rows): cut from the
      // whole rows when the tile's rows are one run, else gathered.
      auto pack = [&]() {
        if (packed_rows == nullptr || *packed_rows != t.rows || packed_g != g || packed_G != G) {
          if (contiguous[ti] != 0) {
            pack_rows();
            xbits = PackTileFromRowBits(row_bits, K_, M, P, t, v);
          } else {
            xbits = PackTileInputs(x_chunk, M, K_, digits, t, v);
          }
          packed_rows = &t.rows;
          packed_g = g;
          packed_G = G;
        }
      };
      // Lowered float inputs [G, P*M, g] for the float kernel.
      auto lower = [&]() {
        if (cached_rows == nullptr || *cached_rows != t.rows || xg.size(2) != g) {
          chunk_planes();
          torch::Tensor xt = X.index_select(2, IndexTensor(t.rows));  // [P, M, R]
          if (G * g != t.num_rows()) xt = torch::constant_pad_nd(xt, {0, G * g - t.num_rows()}, 0);
          xg = xt.reshape({P * M, G, g}).permute({1, 0, 2}).contiguous();  // [G, P*M, g]
          cached_rows = &t.rows;
        }
      };
      // Column sums of every read in every cycle, [G, P*M, NR]: the fixed-order float kernel, or
      // bit-packed; both exact on integer cells, and the float one the same bits wherever a
      // position sits (kernels/float.cc). Once a crossbar runs bit-packed, its sums are counted
      // position by position inside the ADC pass below and never stored.
      const bool can_pack = t.words > 0;
      const bool fused = fused_kernel(t);
      torch::Tensor sums;
      // A fused crossbar on one 64-aligned run of rows reads the chunk's whole-row packed digits.
      const bool from_row_bits = fused && fits;
      const bool float_sums = !fused && (!can_pack || kernel_ == SumKernel::kFloat || t.kernel == 1);
      // Groups of a few rows (FORMS fragments) with no per-read stage: each group's sums looked up
      // by its digit pattern in a table of every pattern's sums, the same bits as FloatSums
      // (PatternSums), built once per crossbar and chunk instead of summing for every position and
      // plane.
      const bool by_pattern = float_sums && per_pattern && PatternSumsPay(g, v, P, M);
      thread_local std::vector<float> pattern_sums;
      thread_local std::vector<int32_t> pattern_codes;
      const int64_t pattern_stride = PatternSumsStride(NR), patterns = by_pattern ? int64_t{1} << (v * g) : 0;
      if (from_row_bits) {
        pack_rows();
      } else if (fused) {
        pack();
      } else if (by_pattern) {
        // the sums are looked up per position below
      } else if (float_sums) {
        lower();
        sums = FloatSums(xg, t.reads);
      } else if (kernel_ == SumKernel::kPacked || t.kernel == 2) {
        pack();
        sums = PackedSums(t, xbits, P * M, v);
      } else {  // undecided: time both on these positions (each with its input preparation), keep the faster
        using Clock = std::chrono::steady_clock;
        const auto t0 = Clock::now();
        lower();
        sums = FloatSums(xg, t.reads);
        const auto t1 = Clock::now();
        pack();
        torch::Tensor alt = PackedSums(t, xbits, P * M, v);
        const auto t2 = Clock::now();
        t.kernel = (t2 - t1) < (t1 - t0) ? 2 : 1;
      }
      if (sums.defined()) {
        // The analog read stages between the DAC and the ADC (read noise), in order.
        if (!chain_.stages.empty()) lower();
        const ReadBatch batch{noise_seed, static_cast<int64_t>(&t - tiles_.data()), P, M, first_mvm + m_begin};
        for (const auto& stage : chain_.stages) stage->Apply(t, xg, sums, ctx, batch);
        if (calibrating_) chain_.adc->Record(t, sums, ctx);
        sums = sums.contiguous();
      }
      const float* sp = sums.defined() ? sums.data_ptr<float>() : nullptr;
      const ConvertTables tab{t.adc_inv.data(), t.adc_lo.data(), t.adc_hi.data(), planes.weight.data(), P,
                              t.adc_scale.data(), int_codes[ti] != 0};
      if (by_pattern) {  // every pattern's sums, then their ADC codes
        pattern_sums.resize(static_cast<size_t>(G * patterns * pattern_stride));
        pattern_codes.resize(pattern_sums.size());
        PatternSums(t.reads, v, pattern_sums.data());
        PatternCodes(pattern_sums.data(), G * patterns, pattern_stride, NR, tab, pattern_codes.data());
        if (calibrating_) {  // the ADC ranges from how often each group's patterns occur
          std::vector<int64_t> counts(static_cast<size_t>(G * patterns), 0);
          std::vector<uint32_t> pattern(static_cast<size_t>(P));
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t gi = 0; gi < G; ++gi) {
              GroupPatterns(x_chunk + m * K_, t, gi, digits, v, pattern.data());
              for (uint32_t q : pattern) ++counts[static_cast<size_t>(gi * patterns + q)];
            }
          }
          chain_.adc->RecordPatterns(t, pattern_sums.data(), pattern_stride, patterns, counts, ctx);
        }
      }
      const int32_t* codes = pattern_codes.data();
      const int64_t weight_cols = NR - (t.unit.defined() ? 1 : 0);  // the offset scheme's unit column comes last
      // Plane p, bit k of position m on group gi: x(gi, m) + p * x_plane + k * x_bit.
      const int64_t x_bit = from_row_bits ? KW : t.words;
      const int64_t x_plane = from_row_bits ? v * KW : M * v * t.words;
      const uint64_t* x_base = from_row_bits ? row_bits.data() + t.rows[0] / 64 : xbits.data();
      const std::vector<int64_t>& out_col = t.cols;
      const double* unit_gain = t.unit_gain.empty() ? nullptr : t.unit_gain.data();
      // Per position: column sums, ADC (the tables the adc stage set), shift-and-add over the input
      // planes and each read's digital weight (kernels/convert.cc), then the reads of an output
      // summed and scattered. Positions are independent, so the result does not depend on the
      // number of threads.
      at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
        std::vector<double> acc(static_cast<size_t>(C)), S(static_cast<size_t>(NR));
        std::vector<uint32_t> pattern(static_cast<size_t>(by_pattern ? P : 0));  // per plane, at one group
        for (int64_t m = m0; m < m1; ++m) {
          std::fill(acc.begin(), acc.end(), 0.0);
          double unit = 0.0;
          for (int64_t gi = 0; gi < G; ++gi) {
            const int64_t i = gi * P * M + m;  // plane 0's row; plane p's is i + p * M
            if (from_row_bits) {
              ConvertPosition(t, gi, tab, v, x_base + m * P * v * KW + gi * g / 64, x_plane, x_bit, nullptr, 0, S.data());
            } else if (fused) {
              ConvertPosition(t, gi, tab, v, x_base + i * v * t.words, x_plane, x_bit, nullptr, 0, S.data());
            } else if (by_pattern) {
              GroupPatterns(x_chunk + m * K_, t, gi, digits, v, pattern.data());
              ConvertPatterns(codes + gi * patterns * pattern_stride, pattern_stride, pattern.data(), tab, gi, NR,
                              S.data());
            } else {
              ConvertPosition(t, gi, tab, v, nullptr, 0, 0, sp + i * NR, M * NR, S.data());
            }
            // Each output's reads (one per block of C columns) added in column order; eight
            // outputs at a time in registers.
            double* a = acc.data();
            int64_t j = 0;
            for (; j + 8 <= C; j += 8) {
              double r[8];
              for (int u = 0; u < 8; ++u) r[u] = a[j + u];
              for (int64_t c0 = 0; c0 < weight_cols; c0 += C) {
                for (int u = 0; u < 8; ++u) r[u] += S[static_cast<size_t>(c0 + j + u)];
              }
              for (int u = 0; u < 8; ++u) a[j + u] = r[u];
            }
            for (; j < C; ++j) {
              double r = a[j];
              for (int64_t c0 = 0; c0 < weight_cols; c0 += C) r += S[static_cast<size_t>(c0 + j)];
              a[j] = r;
            }
            for (int64_t c = weight_cols; c < NR; ++c) unit += S[static_cast<size_t>(c)];
          }
          for (int64_t j = 0; j < C; ++j) {
            const int64_t o = own_outputs ? j : out_col[static_cast<size_t>(j)];
            // flipped encoding: the unit column's contribution per output
            dst[o * M + m] += acc[static_cast<size_t>(j)] + (unit_gain == nullptr ? unit : unit * unit_gain[j]);
          }
        }
      });
    };
    if (!tile_parallel) {
      InputCache cache;
      for (CrossbarTile& t : tiles_) run_tile(t, cache, out_t.data(), false);
    } else {
      // Each crossbar's outputs on their own (offsets into one buffer), crossbars handed out in
      // blocks one at a time (a thread whose core is busy takes fewer), then added in crossbar order.
      bool may_pack = false, may_lower = false;
      for (const CrossbarTile& t : tiles_) {
        may_pack |= t.words > 0;
        may_lower |= !fused_kernel(t);
      }
      if (may_pack) pack_rows();  // shared, read-only below
      if (may_lower) chunk_planes();  // likewise
      const auto T = static_cast<int64_t>(tiles_.size());
      std::vector<int64_t> offset(tiles_.size() + 1, 0);
      for (size_t i = 0; i < tiles_.size(); ++i) offset[i + 1] = offset[i] + tiles_[i].num_cols() * M;
      // Not value-initialised: each crossbar's thread clears that crossbar's block before adding.
      const std::unique_ptr<double[]> own(new double[static_cast<size_t>(offset.back())]);
      const int64_t workers = std::min<int64_t>(at::get_num_threads(), T);
      const int64_t block = std::max<int64_t>(1, T / (workers * 8));
      std::atomic<int64_t> next{0};
      at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
        InputCache cache;
        for (int64_t b = next++; b * block < T; b = next++) {
          for (int64_t i = b * block; i < std::min(T, (b + 1) * block); ++i) {
            double* dst = own.get() + offset[static_cast<size_t>(i)];
            std::fill(dst, own.get() + offset[static_cast<size_t>(i) + 1], 0.0);
            run_tile(tiles_[static_cast<size_t>(i)], cache, dst, true);
          }
        }
      });
      // Added in crossbar order into each output, the threads splitting the outputs: every output
      // gets the same additions in the same order as on one thread.
      at::parallel_for(0, N_, 64, [&](int64_t n0, int64_t n1) {
        for (size_t i = 0; i < tiles_.size(); ++i) {
          const double* o = own.get() + offset[i];
          const std::vector<int64_t>& cols = tiles_[i].cols;
          for (size_t j = 0; j < cols.size(); ++j) {
            if (cols[j] < n0 || cols[j] >= n1) continue;
            double* a = out_t.data() + cols[j] * M;
            const double* b = o + static_cast<int64_t>(j) * M;
            for (int64_t m = 0; m < M; ++m) a[m] += b[m];
          }
        }
      });
    }
    double* out_p = out.data_ptr<double>() + m_begin * N_;
    // Copied out position by position (split between the threads unless the chunks are).
    auto copy_out = [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        for (int64_t n = 0; n < N_; ++n) out_p[m * N_ + n] = out_t[static_cast<size_t>(n * M + m)];
      }
    };
    at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, N_)), copy_out);
  };
  const int64_t chunks = (M_all + chunk_size - 1) / chunk_size;
  int64_t first = 0;
  // Calibration updates shared ranges, and kAuto decides every crossbar's kernel on the first chunk:
  // those run one chunk at a time (each chunk still parallel over its positions).
  if (undecided && chunks > 0) run_chunk(first++);
  if (calibrating_ || chunks - first <= 1) {
    for (int64_t c = first; c < chunks; ++c) run_chunk(c);
  } else {
    // Chunks handed out one at a time, so a thread whose core is busy with another program takes
    // fewer of them instead of holding the others at the barrier (a static split made two threads
    // slower than one on a busy machine). Which thread computes a chunk does not change its bits.
    std::atomic<int64_t> next{first};
    const int64_t workers = std::min<int64_t>(at::get_num_threads(), chunks - first);
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      for (int64_t c = next++; c < chunks; c = next++) run_chunk(c);
    });
  }
  if (stats != nullptr) CountReads(xq, signed_inputs, stats);
  return out;
}

}  // namespace xbar
