#include "xbar/crossbar/workload.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "xbar/core/error.h"
#include "xbar/crossbar/kernels.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/crossbar/threads.h"

namespace xbar {
namespace {

void Finish(std::map<std::string, LayerInputs>& in, int input_bits) {
  for (auto& [name, r] : in) {
    r.signed_inputs = r.min < 0;
    const double top = r.signed_inputs ? std::ldexp(1.0, input_bits - 1) - 1 : std::ldexp(1.0, input_bits) - 1;
    r.scale = r.max_abs > 0 ? r.max_abs / top : 1.0;
  }
}

// Installs a layer override for its lifetime (also when the forward pass throws).
class ScopedOverride {
 public:
  ScopedOverride(Model& model, LayerOverride fn) : model_(model) { model_.SetLayerOverride(std::move(fn)); }
  ~ScopedOverride() { model_.SetLayerOverride(nullptr); }
  ScopedOverride(const ScopedOverride&) = delete;
  ScopedOverride& operator=(const ScopedOverride&) = delete;

 private:
  Model& model_;
};

// Records every layer's input range and positions while running the float model; safe to call
// from several threads at once (the ranges are maxima and minima: the same in any order).
LayerOverride Recorder(Model& model, std::map<std::string, LayerInputs>& in, std::mutex& mu) {
  for (const LayerInfo& l : model.layers()) in[l.name];
  return [&in, &mu](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) {
    // One pass for both extremes (max |x| = max(-min, max)): no |x| tensor is made.
    const auto [lo, hi] = at::aminmax(x);
    const double min = lo.item<double>(), max_abs = std::max(-min, hi.item<double>());
    torch::Tensor y = ideal(x);
    const int64_t positions = y.numel() / (y.size(0) * l.out_channels);
    std::lock_guard<std::mutex> lock(mu);
    LayerInputs& r = in.at(l.name);
    r.max_abs = std::max(r.max_abs, max_abs);
    r.min = std::min(r.min, min);
    r.positions = positions;
    return y;
  };
}

// Runs `model` over `images` in batches of kCalibrationBatch. On the CPU the batches run side by
// side, each on one thread: a batch's float32 sums are then the same as on one thread (a
// multi-threaded GEMM may sum in another order, and a range or activation that moves by one ulp
// moves every quantised input after it), so results do not depend on the thread count.
void ForwardInBatches(Model& model, const torch::Tensor& images, torch::Device device) {
  const int64_t n = images.size(0);
  const int64_t batches = (n + kCalibrationBatch - 1) / kCalibrationBatch;
  auto run = [&](int64_t b) {
    torch::NoGradGuard no_grad;
    const int64_t start = b * kCalibrationBatch;
    model.forward(images.slice(0, start, std::min(n, start + kCalibrationBatch)).to(device));
  };
  if (!device.is_cpu()) {
    for (int64_t b = 0; b < batches; ++b) run(b);
    return;
  }
  if (at::get_num_threads() == 1 || batches == 1) {
    OneThread one;  // no side-by-side batches: each on one thread all the same
    for (int64_t b = 0; b < batches; ++b) run(b);
    return;
  }
  // Inside at::parallel_for, ATen's own loops and OpenBLAS (OpenMP) run on the calling thread.
  at::parallel_for(0, batches, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) run(b);
  });
}

// acc[t] = max(acc[t], src[t]) for t < n. A function of its own: with the length a local and both
// pointers restrict-qualified the loop vectorises (inside NeededCycles every byte store could alias
// the lambda's captures, which the compiler then reloads each iteration).
void MaxInto(uint8_t* __restrict acc, const uint8_t* __restrict src, const int64_t n) {
  for (int64_t t = 0; t < n; ++t) acc[t] = std::max(acc[t], src[t]);
}

}  // namespace

int64_t NeededCycles(const torch::Tensor& need, const LayerInfo& l, int64_t channel0, const std::vector<int64_t>& rows,
                     int64_t m, int64_t out_h, int64_t out_w) {
  const uint8_t* np = need.data_ptr<uint8_t>();
  const int64_t B = need.size(0);
  const int64_t F = (static_cast<int64_t>(rows.size()) + m - 1) / m;
  std::vector<int64_t> per_fragment(static_cast<size_t>(F), 0);
  if (l.kind == LayerKind::kLinear) {
    const int64_t K = need.size(1);
    at::parallel_for(0, F, 1, [&](int64_t f0, int64_t f1) {
      for (int64_t f = f0; f < f1; ++f) {
        const int64_t r1 = std::min<int64_t>(static_cast<int64_t>(rows.size()), (f + 1) * m);
        int64_t sum = 0;
        for (int64_t b = 0; b < B; ++b) {
          uint8_t mx = 0;
          for (int64_t r = f * m; r < r1; ++r) mx = std::max(mx, np[b * K + channel0 + rows[static_cast<size_t>(r)]]);
          sum += mx;
        }
        per_fragment[static_cast<size_t>(f)] = sum;
      }
    });
  } else {
    const int64_t C = need.size(1), Hp = need.size(2), Wp = need.size(3);
    const int64_t khw = l.kernel_h * l.kernel_w, s = l.stride;
    // Stride 1: a window's rows follow each other at the padded row pitch Wp, so the maxima run
    // over one contiguous span of (out_h - 1) * Wp + out_w bytes per row of the fragment (long
    // vector loops); the Wp - out_w bytes after each output row are other windows' and not summed.
    const int64_t pitch = s == 1 ? Wp : out_w, span = s == 1 ? (out_h - 1) * Wp + out_w : out_h * out_w;
    at::parallel_for(0, F, 1, [&](int64_t f0, int64_t f1) {
      std::vector<uint8_t> acc_buf(static_cast<size_t>(out_h * pitch));
      uint8_t* acc = acc_buf.data();
      for (int64_t f = f0; f < f1; ++f) {
        const int64_t r1 = std::min<int64_t>(static_cast<int64_t>(rows.size()), (f + 1) * m);
        int64_t sum = 0;
        for (int64_t b = 0; b < B; ++b) {
          std::fill(acc, acc + span, 0);
          for (int64_t r = f * m; r < r1; ++r) {
            const int64_t k = rows[static_cast<size_t>(r)];
            const int64_t c = channel0 + k / khw, i = (k / l.kernel_w) % l.kernel_h, j = k % l.kernel_w;
            const uint8_t* plane = np + ((b * C + c) * Hp + i * l.dilation) * Wp + j * l.dilation;
            if (s == 1) {
              MaxInto(acc, plane, span);
            } else {
              for (int64_t oy = 0; oy < out_h; ++oy) {
                const uint8_t* src = plane + oy * s * Wp;
                uint8_t* dst = acc + oy * out_w;
                for (int64_t ox = 0; ox < out_w; ++ox) dst[ox] = std::max(dst[ox], src[ox * s]);
              }
            }
          }
          for (int64_t oy = 0; oy < out_h; ++oy) {
            uint32_t row = 0;
            for (int64_t ox = 0; ox < out_w; ++ox) row += acc[oy * pitch + ox];
            sum += row;
          }
        }
        per_fragment[static_cast<size_t>(f)] = sum;
      }
    });
  }
  int64_t total = 0;
  for (int64_t v : per_fragment) total += v;  // integer: the same at any thread count
  return total;
}

std::map<std::string, LayerInputs> CalibrateInputs(Model& model, const torch::Tensor& images, torch::Device device,
                                                   int input_bits) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::map<std::string, LayerInputs> in;
  std::mutex mu;
  {
    ScopedOverride record(model, Recorder(model, in, mu));
    ForwardInBatches(model, images, device);
  }
  Finish(in, input_bits);
  return in;
}

std::map<std::string, LayerInputs> ProbeInputs(Model& model, const torch::Tensor& probe, int input_bits) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::map<std::string, LayerInputs> in;
  std::mutex mu;
  {
    ScopedOverride record(model, Recorder(model, in, mu));
    model.forward(probe);
  }
  Finish(in, input_bits);
  return in;
}

std::vector<hw::LayerWork> NetworkWork(Model& model, const MappingSpec& map, const std::map<std::string, double>& scales,
                                       const std::map<std::string, LayerInputs>& inputs, const torch::Tensor* sample,
                                       torch::Device device, std::map<std::string, SkipCounts>* skips,
                                       const DeviceSpec* device_spec) {
  torch::NoGradGuard no_grad;
  struct Layer {
    hw::LayerWork work;
    std::vector<std::vector<int64_t>> tile_rows;  // per group: every tile's rows, in group order
    std::vector<int64_t> group_tiles;             // tiles per group
    torch::Tensor qweight;                        // quantised weights in the layer's shape (float)
    torch::Tensor qweight_i8;                     // the same as int8, where they fit (ExactIntConv)
    torch::Tensor bias;                           // or undefined
    double weight_scale = 1.0;
    SkipCounts skip;
  };
  std::map<std::string, Layer> layers;
  std::vector<std::string> order;
  auto params = model.named_parameters();
  const int64_t L = map.levels();
  for (const LayerInfo& l : model.layers()) {
    auto it = inputs.find(l.name);
    XBAR_CHECK(it != inputs.end(), "no input statistics for layer ", l.name);
    const LayerInputs& in = it->second;
    Layer& s = layers[l.name];
    order.push_back(l.name);
    const torch::Tensor w = model.LayerWeight(l.name).detach().cpu();
    const torch::Tensor w2d = w.reshape({l.out_channels, -1});
    // One quantisation step for the whole layer, its groups mapped separately (as the simulator).
    s.weight_scale = WeightScale(w2d, map.weight_bits, scales.count(l.name) ? scales.at(l.name) : 0.0);
    if (s.weight_scale <= 0) s.weight_scale = 1.0;
    const int64_t per_group = l.out_channels / l.groups;
    hw::LayerWork& wk = s.work;
    wk.name = l.name;
    wk.rows = l.gemm_rows();
    wk.cols = l.gemm_cols();
    wk.positions = in.positions;
    wk.input_cycles = map.InputCycles(in.signed_inputs);
    double level_sum = 0;
    int64_t cells = 0;
    for (int64_t g = 0; g < l.groups; ++g) {
      const LayerPlan p = PlanLayer(l.groups == 1 ? l.name : StrCat(l.name, "#", g), w2d.narrow(0, g * per_group, per_group),
                                    s.weight_scale, map, sample != nullptr ? &s.tile_rows : nullptr);
      wk.crossbars += p.crossbars;
      wk.used_rows += p.used_rows;
      wk.used_cols += p.used_columns;
      wk.conversions_per_cycle += static_cast<double>(p.conversions_per_plane);
      level_sum += p.level_sum;
      cells += p.cells;
      wk.adc_bits = std::max(wk.adc_bits, p.adc_bits);
      s.group_tiles.push_back(p.tiles);
    }
    if (device_spec != nullptr && device_spec->wire_resistance_ohm > 0) {
      double nominal = 0, effective = 0;
      for (int64_t g = 0; g < l.groups; ++g) {
        CrossbarLayer xb(l.groups == 1 ? l.name : StrCat(l.name, "#", g), w2d.narrow(0, g * per_group, per_group),
                         s.weight_scale, map, *device_spec);
        nominal += xb.read_current_nominal();
        effective += xb.read_current_effective();
      }
      wk.read_current_ratio = nominal > 0 ? effective / nominal : 1.0;
    }
    wk.cells = cells;
    wk.mean_level = cells > 0 ? level_sum / (static_cast<double>(cells) * static_cast<double>(L)) : 0.0;
    wk.sign_bits = map.scheme->SignBits(wk.rows, wk.cols, map.fragment_rows);
    wk.weights = w2d.numel();
    wk.nonzero = w2d.ne(0).sum().item<int64_t>();
    if (sample != nullptr) {
      s.qweight = QuantizeWeights(w2d, s.weight_scale, map.weight_bits).view(w.sizes());
      if (ExactIntConvAvailable() && s.qweight.numel() > 0 && s.qweight.abs().max().item<float>() <= 127.0f) {
        s.qweight_i8 = s.qweight.to(torch::kInt8).contiguous();
      }
      if (auto* b = params.find(l.name + ".bias")) s.bias = b->detach().cpu();
    }
  }
  if (sample != nullptr) {
    // The ideal crossbar network (quantised inputs and weights): each layer counts its fragments'
    // needed cycles on its quantised inputs, then computes what a lossless crossbar does, with exact
    // integer sums (ExactIntConv: oneDNN's int8 kernels on CPUs with VNNI or AMX, an AVX2 kernel of
    // our own otherwise) for inputs of up to 16 bits and weights of up to 8, rounded once to
    // float32 -- the same on every CPU with AVX2. Without AVX2 they are float32 GEMMs, exact while
    // they stay below 2^24; beyond that a sum can round, which can move a later layer's quantised
    // input by one step (docs/BENCHMARKS.md measures by how much).
    std::mutex mu;
    model.eval();
    ScopedOverride count(model, [&](const LayerInfo& l, const torch::Tensor& x, const LayerFn&) {
      Layer& s = layers.at(l.name);
      const LayerInputs& in = inputs.at(l.name);
      torch::Tensor xq = QuantizeInputs(x, in.scale, in.signed_inputs, map.input_bits);
      const int64_t B = x.size(0), P = map.InputCycles(in.signed_inputs), m = map.fragment_rows;
      int64_t out_h = 1, out_w = 1;
      torch::Tensor need;
      if (l.kind == LayerKind::kConv2d) {
        out_h = l.out_size(x.size(2), l.kernel_h);
        out_w = l.out_size(x.size(3), l.kernel_w);
        need = PlanesNeeded(xq, map.dac_bits, P, l.padding);
      } else {
        need = PlanesNeeded(xq.reshape({B, -1}), map.dac_bits, P, 0);
      }
      const int64_t cin = l.in_channels / l.groups;
      SkipCounts counts;
      size_t tile = 0;
      for (int64_t g = 0; g < l.groups; ++g) {
        // Column groups of a layer share their row sets (always, without row compaction): count
        // each distinct set once.
        std::map<std::vector<int64_t>, int64_t> by_rows;
        for (int64_t t = 0; t < s.group_tiles[static_cast<size_t>(g)]; ++t, ++tile) {
          const std::vector<int64_t>& rows = s.tile_rows[tile];
          const int64_t F = (static_cast<int64_t>(rows.size()) + m - 1) / m;
          counts.applied += P * B * out_h * out_w * F;
          auto it = by_rows.find(rows);
          if (it == by_rows.end()) it = by_rows.emplace(rows, NeededCycles(need, l, g * cin, rows, m, out_h, out_w)).first;
          counts.needed += it->second;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);  // integer sums: the same in any order
        s.skip.applied += counts.applied;
        s.skip.needed += counts.needed;
      }
      torch::Tensor y;
      if (s.qweight_i8.defined() && xq.device().is_cpu() && map.input_bits <= 16) {
        std::vector<int64_t> sizes;
        const IntConvShape c = IntConvShapeOf(l, xq, &sizes);
        y = torch::empty(sizes);
        const torch::Tensor xc = xq.contiguous();
        if (!ExactIntConv(c, xc.data_ptr<float>(), s.qweight_i8.data_ptr<int8_t>(), y.data_ptr<float>())) y = torch::Tensor();
      }
      if (!y.defined()) {
        const torch::Tensor w = s.qweight.to(x.device());
        y = l.kind == LayerKind::kConv2d ? torch::conv2d(xq, w, {}, l.stride, l.padding, l.dilation, l.groups)
                                         : torch::mm(xq.reshape({B, -1}), w.t());
      }
      y.mul_(s.weight_scale * in.scale);
      if (s.bias.defined()) y.add_(l.kind == LayerKind::kConv2d ? s.bias.to(x.device()).view({1, -1, 1, 1}) : s.bias.to(x.device()));
      return y;
    });
    ForwardInBatches(model, *sample, device);
  }
  std::vector<hw::LayerWork> out;
  for (const std::string& name : order) {
    Layer& s = layers.at(name);
    if (sample != nullptr) {
      s.work.cycle_share = s.skip.applied > 0 ? static_cast<double>(s.skip.needed) / static_cast<double>(s.skip.applied) : 1.0;
      if (skips != nullptr) (*skips)[name] = s.skip;
    }
    out.push_back(s.work);
  }
  return out;
}

}  // namespace xbar
