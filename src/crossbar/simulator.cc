#include "xbar/crossbar/simulator.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/crossbar/kernels.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/workload.h"

namespace xbar {
namespace {

// Sum of (a - b)^2 and of b^2 in float64, image by image in a fixed order (`images` equal
// contiguous chunks): the same bits at any thread count and batch size (torch's parallel
// reductions split a sum by thread, and per-batch partial sums group it by batch).
void AddSquares(const torch::Tensor& a, const torch::Tensor& b, int64_t images, double* err2, double* ref2) {
  torch::Tensor x = a.to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  torch::Tensor y = b.to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  const double* xp = x.data_ptr<double>();
  const double* yp = y.data_ptr<double>();
  const int64_t per = images > 0 ? x.numel() / images : x.numel();
  for (int64_t i0 = 0; i0 < x.numel(); i0 += per) {
    double e = 0, r = 0;
    for (int64_t i = i0; i < std::min(x.numel(), i0 + per); ++i) {
      const double d = xp[i] - yp[i];
      e += d * d;
      r += yp[i] * yp[i];
    }
    *err2 += e;
    *ref2 += r;
  }
}

// x [B, K] times w [N, K]^T plus b, float64, each output a sequential sum.
torch::Tensor FixedOrderLinear(const torch::Tensor& x_in, const torch::Tensor& w_in, const torch::Tensor& b) {
  torch::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const int64_t B = x.size(0), K = x.size(1), N = w.size(0);
  torch::Tensor y = torch::empty({B, N}, torch::kFloat64);
  const double *xp = x.data_ptr<double>(), *wp = w.data_ptr<double>();
  const double* bp = b.defined() ? b.data_ptr<double>() : nullptr;
  double* yp = y.data_ptr<double>();
  at::parallel_for(0, B * N, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const double* xr = xp + (i / N) * K;
      const double* wr = wp + (i % N) * K;
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += xr[k] * wr[k];
      yp[i] = acc + (bp != nullptr ? bp[i % N] : 0.0);
    }
  });
  return y;
}

// On a GPU the exact paths (fast path, tensor engine) need full float32 products: no TF32 in cuBLAS
// (bmm, mm) or cuDNN (conv). cuDNN may still pick a Winograd or FFT convolution, which rounds:
// to be checked on a GPU (docs/BENCHMARKS.md, "The engine as tensor ops").
void NoTf32() {
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
}

// Lowering: conv -> im2col rows [B*L, in/G*kh*kw] per group; linear -> [B, in].
std::vector<torch::Tensor> LowerInputs(const LayerInfo& l, const torch::Tensor& xin) {
  std::vector<torch::Tensor> cols(static_cast<size_t>(l.groups));
  if (l.kind == LayerKind::kConv2d) {
    const int64_t cin = l.in_channels / l.groups;
    for (int64_t g = 0; g < l.groups; ++g) {
      torch::Tensor u = torch::nn::functional::unfold(
          xin.narrow(1, g * cin, cin),
          torch::nn::functional::UnfoldFuncOptions({l.kernel_h, l.kernel_w})
              .padding(l.padding)
              .stride(l.stride)
              .dilation(l.dilation));
      cols[static_cast<size_t>(g)] = u.transpose(1, 2).reshape({-1, u.size(1)});
    }
  } else {
    cols[0] = xin;
  }
  return cols;
}

}  // namespace

struct NetworkSimulator::LayerState {
  LayerInfo info;
  std::vector<std::unique_ptr<CrossbarLayer>> groups;  // one per convolution group
  torch::Tensor bias;
  torch::Tensor fast_weight;  // quantised weights in the layer's own shape, for the exact fast path
  // Faulty but still exact crossbars as one integer weight tensor in the layer's shape (folded
  // after each Program on first use; undefined when not foldable).
  torch::Tensor folded_weight;
  bool folded_checked = false;
  ExactPlan fast_plan, folded_plan;  // how ExactPartials keeps their sums exact (made on first use)
  torch::Tensor float_weight;  // the float weights (float64), for the NMSE reference
  double input_scale = 1.0;
  bool signed_inputs = false;
  double input_max = 0.0, input_min = 0.0;
  // Statistics of the last crossbar evaluation.
  ReadStats reads;
  double err2 = 0, err2_ref = 0, ref2 = 0, float2 = 0;
  int64_t vectors = 0;  // input vectors (MVMs) of group 0
  // Fault-map-aware placement: E[x_k²] of every GEMM row, per group (calibration images).
  std::vector<std::vector<double>> moments;
};

NetworkSimulator::NetworkSimulator(Model& model, const MappingSpec& map, const DeviceSpec& device,
                                   const std::map<std::string, double>& weight_scales)
    : model_(model), map_(map), device_(device) {
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters();
  for (const LayerInfo& l : model.layers()) {
    auto s = std::make_unique<LayerState>();
    s->info = l;
    torch::Tensor w = model.LayerWeight(l.name).detach().cpu();
    const int64_t G = l.groups, n_per = l.out_channels / G;
    torch::Tensor w2d = w.reshape({l.out_channels, -1});
    // One quantisation step for the whole layer, so groups share it.
    const double scale = WeightScale(w2d, map.weight_bits, weight_scales.count(l.name) ? weight_scales.at(l.name) : 0.0);
    // Cells are numbered for fault maps in this order (docs/USER_GUIDE.md).
    for (int64_t g = 0; g < G; ++g) {
      s->groups.push_back(std::make_unique<CrossbarLayer>(G == 1 ? l.name : StrCat(l.name, "#", g),
                                                          w2d.narrow(0, g * n_per, n_per), scale, map, device));
    }
    if (auto* b = params.find(l.name + ".bias")) s->bias = b->detach().cpu().to(torch::kFloat64);
    std::vector<torch::Tensor> q;
    for (const auto& g : s->groups) q.push_back(g->quantized());
    s->fast_weight = torch::cat(q, 0).view(w.sizes()).to(torch::kFloat32);
    s->float_weight = w.to(torch::kFloat64);
    layers_.push_back(std::move(s));
  }
}

NetworkSimulator::~NetworkSimulator() { model_.SetLayerOverride(nullptr); }

void NetworkSimulator::SetSumKernel(SumKernel k) {
  kernel_ = k;
  for (auto& s : layers_) {
    for (auto& g : s->groups) g->SetSumKernel(k);
  }
}

void NetworkSimulator::UseDevice(torch::Device device) {
  if (!device.is_cuda()) return;
  NoTf32();
  if (kernel_ == SumKernel::kAuto) SetSumKernel(SumKernel::kTensor);  // the engine on the GPU too
}

int64_t NetworkSimulator::crossbars() const {
  int64_t n = 0;
  for (const auto& s : layers_) {
    for (const auto& g : s->groups) n += g->crossbars();
  }
  return n;
}

torch::Tensor LowerConvRows(const LayerInfo& l, const torch::Tensor& x, int64_t group) {
  XBAR_CHECK(x.is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 4, "LowerConvRows: CPU float32 [B, C, H, W]");
  const torch::Tensor xc = x.contiguous();
  const int64_t B = xc.size(0), C = xc.size(1), H = xc.size(2), W = xc.size(3);
  const int64_t out_h = l.out_size(H, l.kernel_h), out_w = l.out_size(W, l.kernel_w);
  const int64_t cin = l.in_channels / l.groups, kh = l.kernel_h, kw = l.kernel_w;
  const int64_t K = cin * kh * kw, L = out_h * out_w;
  torch::Tensor rows = torch::empty({B * L, K}, xc.options());
  const float* xp = xc.data_ptr<float>();
  float* rp = rows.data_ptr<float>();
  const int64_t c0 = group * cin, stride = l.stride, pad = l.padding, dil = l.dilation;
  at::parallel_for(0, B * L, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, K)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / L, oh = p % L / out_w, ow = p % out_w;
      float* row = rp + p * K;
      for (int64_t c = 0; c < cin; ++c) {
        const float* plane = xp + (b * C + c0 + c) * H * W;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t h = oh * stride - pad + i * dil;
          float* dst = row + (c * kh + i) * kw;
          if (h < 0 || h >= H) {
            std::fill(dst, dst + kw, 0.0f);
            continue;
          }
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t w = ow * stride - pad + j * dil;
            dst[j] = w < 0 || w >= W ? 0.0f : plane[h * W + w];
          }
        }
      }
    }
  });
  return rows;
}

torch::Tensor QuantizeInputs(const torch::Tensor& x, double scale, bool signed_inputs, int input_bits) {
  const double qmax = signed_inputs ? std::ldexp(1.0, input_bits - 1) - 1 : std::ldexp(1.0, input_bits) - 1;
  const double qmin = signed_inputs ? -qmax - 1 : 0.0;
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32) {
    // One pass (kernels/fast_path.cc), the same bits as the three tensor ops below.
    const torch::Tensor xc = x.contiguous();
    torch::Tensor q = torch::empty_like(xc);
    QuantizeCodes(xc.data_ptr<float>(), q.data_ptr<float>(), xc.numel(), static_cast<float>(scale),
                  static_cast<float>(qmin), static_cast<float>(qmax));
    return q;
  }
  torch::Tensor q = x / scale;
  q.round_();
  return q.clamp_(qmin, qmax);
}

// Exact integer result of a conv/linear on integer-valued float tensors. A float32 sum of integers
// is exact while every partial sum stays below 2^24, and no partial sum of an output exceeds max|x|
// times the L1 norm of that output's weights. When that bound could exceed 2^24, the input channels
// (a linear layer's inputs) are split into the fewest equal chunks whose bound stays below it: one
// float32 convolution per chunk, the same multiply-adds in all, the exact partial results added in
// float64. When no split works (a grouped convolution, or one channel alone too heavy), the inputs
// are split into base-16 digits x = sum_i 16^i d_i (d_i in 0..15 except the top one, which keeps
// the sign) until the top digit's bound is small enough (16-bit inputs: four float32 convolutions);
// when even one digit could exceed it, the layer runs in float64, exact below 2^53. (oneDNN and
// BLAS compute convolutions as sums of products, never Winograd, on the CPU.)
namespace {
constexpr double kExactF32 = 16777216.0;  // 2^24

torch::Tensor Apply(const LayerInfo& l, const torch::Tensor& in, const torch::Tensor& weight) {
  return l.kind == LayerKind::kConv2d ? torch::conv2d(in, weight, {}, l.stride, l.padding, l.dilation, l.groups)
                                      : torch::mm(in, weight.t());
}
}  // namespace

double MaxRowL1(const torch::Tensor& w) {
  return w.numel() > 0 ? w.abs().reshape({w.size(0), -1}).sum(1).max().item<double>() : 0.0;
}

ExactPlan PlanExactSums(const LayerInfo& l, const torch::Tensor& w, double max_x) {
  torch::NoGradGuard no_grad;
  ExactPlan p;
  p.max_x = max_x;
  p.max_w1 = MaxRowL1(w);
  if (ExactIntSumsAvailable() && w.numel() > 0 && max_x * p.max_w1 >= kExactF32) {  // where ExactPartials may use it
    const torch::Tensor wc = w.to(torch::kCPU, torch::kFloat32);
    if (wc.abs().max().item<float>() <= 32767.0f && torch::equal(wc.round(), wc))
      p.w16 = wc.to(torch::kInt16).contiguous();
  }
  if (w.numel() == 0 || max_x * p.max_w1 < kExactF32 || l.groups != 1) return p;
  // L1 of every output's weights over the first c input channels: [O, C + 1], exact (integers).
  const torch::Tensor a = w.to(torch::kCPU, torch::kFloat64).abs();
  const torch::Tensor per = l.kind == LayerKind::kConv2d ? a.sum({2, 3}) : a;  // [O, C]
  const int64_t C = per.size(1);
  const torch::Tensor cum = torch::cat({torch::zeros({per.size(0), 1}, per.options()), per.cumsum(1)}, 1);
  constexpr int64_t kMaxChunks = 64;
  for (int64_t n = 2; n <= std::min(C, kMaxChunks); ++n) {
    // n equal chunks, on multiples of 16 channels where that keeps them all non-empty (oneDNN's
    // channel blocks).
    const int64_t align = C % 16 == 0 && C / 16 >= n ? 16 : 1;
    std::vector<int64_t> bounds{0};
    for (int64_t i = 1; i < n; ++i) bounds.push_back(((i * C / n + align / 2) / align) * align);
    bounds.push_back(C);
    bool fits = true;
    for (size_t i = 0; i + 1 < bounds.size() && fits; ++i) {
      fits = bounds[i + 1] > bounds[i] &&
             (cum.select(1, bounds[i + 1]) - cum.select(1, bounds[i])).max().item<double>() * max_x < kExactF32;
    }
    if (!fits) continue;
    for (size_t i = 0; i + 1 < bounds.size(); ++i) {
      p.weights.push_back(w.narrow(1, bounds[i], bounds[i + 1] - bounds[i]).contiguous());
    }
    p.bounds = bounds;
    return p;
  }
  return p;  // digits (or float64)
}

IntConvShape IntConvShapeOf(const LayerInfo& l, const torch::Tensor& x, std::vector<int64_t>* out_sizes) {
  IntConvShape c;
  c.batch = x.size(0);
  c.out_channels = l.out_channels;
  if (l.kind == LayerKind::kConv2d) {
    c.in_channels = x.size(1), c.height = x.size(2), c.width = x.size(3);
    c.kernel_h = l.kernel_h, c.kernel_w = l.kernel_w, c.stride = l.stride, c.padding = l.padding;
    c.dilation = l.dilation, c.groups = l.groups;
    *out_sizes = {c.batch, l.out_channels, l.out_size(c.height, l.kernel_h), l.out_size(c.width, l.kernel_w)};
  } else {
    c.in_channels = x.numel() / std::max<int64_t>(1, c.batch);
    *out_sizes = {c.batch, l.out_channels};
  }
  return c;
}

std::vector<torch::Tensor> ExactPartials(const LayerInfo& l, const torch::Tensor& xq, const torch::Tensor& w,
                                         const ExactPlan& plan) {
  const double max_x = plan.max_x, max_w1 = plan.max_w1;
  // Where one float32 pass is not exact: the integer kernel instead of input-channel chunks (on
  // AVX2 builds; AVX-512 runs the chunks' float32 16 lanes wide), digits or float64.
#if defined(__AVX512F__)
  const bool int_kernel = max_x * max_w1 >= kExactF32 && plan.bounds.empty();
#else
  const bool int_kernel = max_x * max_w1 >= kExactF32;
#endif
  if (int_kernel && plan.w16.defined() && xq.is_cpu() && xq.scalar_type() == torch::kFloat32) {
    std::vector<int64_t> sizes;
    const IntConvShape c = IntConvShapeOf(l, xq, &sizes);
    torch::Tensor y = torch::empty(sizes, xq.options().dtype(torch::kFloat64));
    const torch::Tensor xc = xq.contiguous();
    const bool shape_fits = c.groups > 0 && c.in_channels % c.groups == 0 &&
                            plan.w16.numel() == c.out_channels * (c.in_channels / c.groups) * c.kernel_h * c.kernel_w;
    if (c.batch > 0 && shape_fits &&
        ExactIntSums(c, xc.data_ptr<float>(), plan.w16.data_ptr<int16_t>(), y.data_ptr<double>())) {
      return {y};
    }
  }
  if (max_x * max_w1 < kExactF32) return {Apply(l, xq, w)};
  if (!plan.bounds.empty()) {
    std::vector<torch::Tensor> parts;
    for (size_t i = 0; i + 1 < plan.bounds.size(); ++i) {
      const torch::Tensor in = xq.narrow(1, plan.bounds[i], plan.bounds[i + 1] - plan.bounds[i]);
      parts.push_back(Apply(l, l.kind == LayerKind::kConv2d ? in.contiguous() : in, plan.weights[i].to(xq.device())));
    }
    return parts;
  }
  if (15.0 * max_w1 < kExactF32) {
    torch::Tensor rest = xq;
    torch::Tensor y;
    double place = 1.0, bound = max_x;
    while (bound * max_w1 >= kExactF32) {
      torch::Tensor high = torch::floor(rest / 16.0);
      torch::Tensor part = Apply(l, rest - high * 16.0, w).to(torch::kFloat64) * place;
      y = y.defined() ? y + part : part;
      rest = high;
      bound = std::ceil(bound / 16.0);
      place *= 16.0;
    }
    return {y + Apply(l, rest, w).to(torch::kFloat64) * place};
  }
  XBAR_CHECK(max_x * max_w1 < 9007199254740992.0, "layer ", l.name, " too large for exact float64 sums");
  return {Apply(l, xq.to(torch::kFloat64), w.to(torch::kFloat64))};
}

torch::Tensor CombinePartials(const std::vector<torch::Tensor>& parts) {
  if (parts.size() == 1) return parts[0];
  torch::Tensor y = parts[0].to(torch::kFloat64);
  for (size_t i = 1; i < parts.size(); ++i) y = y + parts[i].to(torch::kFloat64);  // exact integers
  return y;
}

torch::Tensor ExactLayer(const LayerInfo& l, const torch::Tensor& xq, const torch::Tensor& w, double max_x) {
  return CombinePartials(ExactPartials(l, xq, w, PlanExactSums(l, w, max_x))).to(torch::kFloat64);
}

FastLayerOut FastLayer(const LayerInfo& l, const torch::Tensor& x, double input_scale, bool signed_inputs,
                       int input_bits, const torch::Tensor& wq, const ExactPlan& plan, double scale,
                       const torch::Tensor& bias) {
  FastLayerOut out;
  out.xq = QuantizeInputs(x, input_scale, signed_inputs, input_bits);
  out.parts = ExactPartials(l, out.xq, wq, plan);
  const torch::Tensor& first = out.parts[0];
  if (first.is_cpu()) {
    // The partial sums added, scaled and biased in one pass: the bits of (sums in float64 · scale +
    // bias) as float32.
    for (auto& part : out.parts) part = part.contiguous();
    out.y = torch::empty(first.sizes(), first.options().dtype(torch::kFloat32));
    const torch::Tensor b = bias.defined() ? bias.to(torch::kCPU, torch::kFloat64).contiguous() : bias;
    const double* bp = b.defined() ? b.data_ptr<double>() : nullptr;
    const int64_t plane = l.kind == LayerKind::kConv2d ? first.size(2) * first.size(3) : 1;
    if (first.scalar_type() == torch::kFloat32) {
      std::vector<const float*> ptrs;
      for (const auto& part : out.parts) ptrs.push_back(part.data_ptr<float>());
      ScaleSums(ptrs.data(), static_cast<int64_t>(ptrs.size()), out.y.data_ptr<float>(), first.numel(), scale, bp,
                l.out_channels, plane);
    } else {
      ScaleSums(first.data_ptr<double>(), out.y.data_ptr<float>(), first.numel(), scale, bp, l.out_channels, plane);
    }
    return out;
  }
  torch::Tensor y = CombinePartials(out.parts).to(torch::kFloat64) * scale;
  if (bias.defined()) {
    const torch::Tensor b = bias.to(x.device(), torch::kFloat64);
    y = l.kind == LayerKind::kConv2d ? y + b.view({1, -1, 1, 1}) : y + b;
  }
  out.y = y.to(torch::kFloat32);
  return out;
}

torch::Tensor NetworkSimulator::RunLayer(LayerState& s, const LayerInfo& l, const torch::Tensor& x,
                                         const LayerFn& ideal, SimMode mode) {
  torch::NoGradGuard no_grad;
  bool exact = mode == SimMode::kReference;
  if (!exact) {
    exact = true;
    for (const auto& g : s.groups) exact = exact && g->lossless();
  }
  const double qmax = s.signed_inputs ? std::ldexp(1.0, map_.input_bits - 1) - 1 : std::ldexp(1.0, map_.input_bits) - 1;
  const double qmin = s.signed_inputs ? -qmax - 1 : 0.0;
  auto quantize = [&](const torch::Tensor& v) { return QuantizeInputs(v, s.input_scale, s.signed_inputs, map_.input_bits); };
  int64_t out_h = 1, out_w = 1;
  auto lower = [&](const torch::Tensor& xin) {
    if (l.kind == LayerKind::kConv2d) {
      out_h = l.out_size(xin.size(2), l.kernel_h);
      out_w = l.out_size(xin.size(3), l.kernel_w);
    }
    return LowerInputs(l, xin);
  };
  // Crossbars whose faults keep them an exact integer map (lossless ADC, no variation, drift,
  // noise or IR drop) run as that map: the same results at fast-path speed.
  bool folded = false;
  if (!exact && mode == SimMode::kCrossbar) {
    if (!s.folded_checked) {
      std::vector<torch::Tensor> parts;
      for (const auto& g : s.groups) {
        torch::Tensor f = g->FoldedWeights();
        if (!f.defined()) {
          parts.clear();
          break;
        }
        parts.push_back(f);
      }
      s.folded_weight = parts.empty() ? torch::Tensor() : torch::cat(parts, 0).to(torch::kFloat32).view(s.fast_weight.sizes());
      s.folded_checked = true;
    }
    folded = s.folded_weight.defined();
  }
  if ((exact || folded) && fast_path_) {
    // The fast path: what a lossless crossbar computes, as one exact float GEMM/conv (fault-free:
    // the quantised weights; with stuck cells: the folded ones), statistics included.
    const int64_t B = x.size(0);
    const double max_x = std::max(std::fabs(qmin), qmax);
    if (s.fast_plan.max_x != max_x) s.fast_plan = PlanExactSums(l, s.fast_weight, max_x);
    if (folded && s.folded_plan.max_x != max_x) s.folded_plan = PlanExactSums(l, s.folded_weight, max_x);
    const FastLayerOut out = FastLayer(l, x, s.input_scale, s.signed_inputs, map_.input_bits,
                                       (folded ? s.folded_weight : s.fast_weight).to(x.device()),
                                       folded ? s.folded_plan : s.fast_plan, s.groups[0]->weight_scale() * s.input_scale, s.bias);
    const torch::Tensor& xq = out.xq;
    const torch::Tensor& y = out.y;
    if (collect_) {
      // Read statistics from the unlowered inputs: per input, the bit-planes it needs; per tile, the
      // fragments' cycles gathered through the layer's window (NeededCycles); conversions counted.
      const torch::Tensor xc = xq.to(torch::kCPU, torch::kFloat32).contiguous();
      const int64_t P = map_.InputCycles(s.signed_inputs), m = map_.fragment_rows;
      const bool conv = l.kind == LayerKind::kConv2d;
      const torch::Tensor need = conv ? PlanesNeeded(xc, map_.dac_bits, P, l.padding)
                                      : PlanesNeeded(xc.reshape({B, -1}), map_.dac_bits, P, 0);
      const int64_t out_h = conv ? y.size(2) : 1, out_w = conv ? y.size(3) : 1;
      const int64_t cin = l.in_channels / l.groups;
      for (int64_t g = 0; g < l.groups; ++g) {
        s.groups[static_cast<size_t>(g)]->CountReads(B * out_h * out_w, s.signed_inputs, [&](const std::vector<int64_t>& rows) {
          return NeededCycles(need, l, g * cin, rows, m, out_h, out_w);
        }, &s.reads);
      }
      s.vectors += B * out_h * out_w;
      if (mode == SimMode::kCrossbar && !reads_only_) {
        if (folded) {
          // Against the exact integer GEMM of the fault-free weights, per group with outputs as
          // [positions, outputs] rows, the order the engine's statistics sum in.
          const torch::Tensor sums = CombinePartials(out.parts);
          const torch::Tensor ref = CombinePartials(ExactPartials(l, xq, s.fast_weight.to(x.device()), s.fast_plan));
          const int64_t per = l.out_channels / l.groups;
          for (int64_t g = 0; g < l.groups; ++g) {
            torch::Tensor a = sums.narrow(1, g * per, per), r = ref.narrow(1, g * per, per);
            if (conv) {
              a = a.permute({0, 2, 3, 1});
              r = r.permute({0, 2, 3, 1});
            }
            AddSquares(a, r, B, &s.err2_ref, &s.ref2);
          }
        }  // lossless: the crossbars compute that GEMM, no error
        AddSquares(y, FloatReference(s, l, x), B, &s.err2, &s.float2);
      }
    }
    return y;
  }
  const torch::Device dev = x.device();
  // The tensor engine runs where the images are; the CPU kernels on the CPU.
  torch::Tensor xin = kernel_ == SumKernel::kTensor ? x.to(torch::kFloat32) : x.to(torch::kCPU, torch::kFloat32);
  const int64_t B = xin.size(0);
  const int64_t G = l.groups;
  // On the CPU a convolution's inputs are quantised before they are lowered (each pixel once, not
  // once per kernel position; the lowered zeros of the padding are the code of zero) and lowered
  // by LowerConvRows: the same codes as lowering first.
  const bool lower_codes = l.kind == LayerKind::kConv2d && xin.is_cpu();
  std::vector<torch::Tensor> cols;
  if (lower_codes) {
    out_h = l.out_size(xin.size(2), l.kernel_h);
    out_w = l.out_size(xin.size(3), l.kernel_w);
    const torch::Tensor codes = quantize(xin);
    for (int64_t g = 0; g < G; ++g) cols.push_back(LowerConvRows(l, codes, g));
  } else {
    cols = lower(xin);
  }
  std::vector<torch::Tensor> outs;
  for (int64_t g = 0; g < G; ++g) {
    CrossbarLayer& layer = *s.groups[static_cast<size_t>(g)];
    torch::Tensor xq = lower_codes ? cols[static_cast<size_t>(g)] : quantize(cols[static_cast<size_t>(g)]);
    if (collect_ && g == 0) s.vectors += xq.size(0);
    torch::Tensor yi;
    const bool lossless = mode == SimMode::kReference || layer.lossless();
    if (lossless) {
      yi = layer.Reference(xq);  // provably what the crossbar computes: the fast path
      if (collect_) layer.CountReads(xq, s.signed_inputs, &s.reads);
    } else {
      // MVMs are numbered image by image: the read noise of an image does not depend on its batch.
      const int64_t per_image = B > 0 ? xq.size(0) / B : 0;
      yi = layer.Forward(xq, s.signed_inputs, DeriveSeed(seed_, "read-noise"), collect_ ? &s.reads : nullptr,
                         image_offset_ * per_image);
    }
    // Against the exact integer GEMM (a lossless layer's output is that GEMM: no error, no second GEMM).
    if (collect_ && mode == SimMode::kCrossbar) AddSquares(yi, lossless ? yi : layer.Reference(xq), B, &s.err2_ref, &s.ref2);
    outs.push_back(yi * (layer.weight_scale() * s.input_scale));
  }
  torch::Tensor y = outs.size() == 1 ? outs[0] : torch::cat(outs, 1);  // [rows, out]
  if (s.bias.defined()) y = y + s.bias.to(y.device());
  if (l.kind == LayerKind::kConv2d) {
    // Contiguous, as the fast path and float inference give it: the model's own float ops after the
    // layer (batch norm) round differently on a channels-last view.
    y = y.view({B, out_h * out_w, l.out_channels}).transpose(1, 2).contiguous().view({B, l.out_channels, out_h, out_w});
  }
  y = y.to(torch::kFloat32).to(dev);
  if (collect_ && mode == SimMode::kCrossbar) AddSquares(y, FloatReference(s, l, x), B, &s.err2, &s.float2);
  return y;
}

torch::Tensor NetworkSimulator::FloatReference(const LayerState& s, const LayerInfo& l, const torch::Tensor& x) const {
  // The float layer in float64 (PyTorch's CPU float64 conv runs image by image, im2col + GEMM):
  // the same reference values at any batch size and thread count, unlike oneDNN's float32 kernels.
  torch::Tensor xd = x.to(torch::kCPU, torch::kFloat64);
  // A linear layer as plain dot products in a fixed order (BLAS picks kernels by batch size).
  return l.kind == LayerKind::kConv2d
             ? torch::conv2d(xd, s.float_weight, s.bias, l.stride, l.padding, l.dilation, l.groups)
             : FixedOrderLinear(xd.reshape({xd.size(0), -1}), s.float_weight, s.bias);
}

void NetworkSimulator::Calibrate(const Dataset& data, int64_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  UseDevice(device);
  model_.eval();
  model_.to(device);
  // A fixed number of training images (mapping.calibration_images), whatever the batch size: the
  // ranges are maxima over them, so they do not depend on how the images are batched.
  const int64_t n = std::min(data.size(), map_.calibration_images);
  calibration_images_ = data.images.narrow(0, 0, n);
  calibration_device_ = device;
  const std::map<std::string, LayerInputs> in = CalibrateInputs(model_, calibration_images_, device, map_.input_bits);
  for (auto& s : layers_) {
    s->moments.clear();  // placement's input moments come from these images: measured again when needed
    const LayerInputs& r = in.at(s->info.name);
    s->input_max = r.max_abs;
    s->input_min = r.min;
    s->signed_inputs = r.signed_inputs;
    s->input_scale = r.scale;
  }
}

void NetworkSimulator::CalibrateAdc() {
  // ADC ranges from what the programmed crossbars see on the calibration images (a chip calibrates
  // its converters after it is programmed, with its faults and variation).
  torch::NoGradGuard no_grad;
  std::map<std::string, LayerState*> by_name;
  for (auto& s : layers_) {
    by_name[s->info.name] = s.get();
    for (auto& g : s->groups) g->StartCalibration();
  }
  model_.SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) {
    return RunLayer(*by_name.at(l.name), l, x, ideal, SimMode::kCrossbar);
  });
  ForwardCalibrationImages("calibrate ADC ranges", "the ADC calibration (mapping.adc_range: calibrated)");
  model_.SetLayerOverride(nullptr);
  for (auto& s : layers_) {
    for (auto& g : s->groups) g->FinishCalibration();
  }
}

void NetworkSimulator::ForwardCalibrationImages(const std::string& what, const std::string& stage) {
  const int64_t n = calibration_images_.size(0);
  const int64_t batches = (n + kCalibrationBatch - 1) / kCalibrationBatch;
  Progress bar(what, std::max<int64_t>(batches, 1), stderr, -1, progress_interval_s_);
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t start = b * kCalibrationBatch;
    if (InterruptRequested()) {
      image_offset_ = 0;
      model_.SetLayerOverride(nullptr);
      throw InterruptedError(StrCat("interrupted during ", stage, " after ", start, " of ", n,
                                    " calibration images; nothing was written"));
    }
    image_offset_ = start;
    model_.forward(calibration_images_.slice(0, start, std::min(n, start + kCalibrationBatch)).to(calibration_device_));
    if (!quiet_ && (bar.Due() || b + 1 == batches)) bar.Update(b + 1);
  }
  image_offset_ = 0;
  if (!quiet_ && batches > 0) bar.Finish();
}

void NetworkSimulator::ComputeInputMoments() {
  // E[x_k²] of every GEMM row over the calibration images, from the float model's layer inputs
  // (the scale of a layer's inputs does not matter: placement compares rows of one layer).
  torch::NoGradGuard no_grad;
  XBAR_CHECK(calibration_images_.defined(), "Calibrate() before Program() with fault-map-aware placement");
  std::map<std::string, LayerState*> by_name;
  for (auto& s : layers_) {
    by_name[s->info.name] = s.get();
    s->moments.assign(s->groups.size(), {});
    for (size_t g = 0; g < s->groups.size(); ++g) s->moments[g].assign(static_cast<size_t>(s->groups[g]->rows()), 0.0);
  }
  std::map<std::string, int64_t> vectors;
  model_.SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) {
    LayerState& s = *by_name.at(l.name);
    const std::vector<torch::Tensor> cols = LowerInputs(l, x.to(torch::kCPU, torch::kFloat64));
    for (size_t g = 0; g < cols.size(); ++g) {
      const torch::Tensor rows = cols[g].reshape({-1, cols[g].size(-1)});
      const torch::Tensor sq = rows.square().sum(0).contiguous();
      const double* p = sq.data_ptr<double>();
      for (size_t k = 0; k < s.moments[g].size(); ++k) s.moments[g][k] += p[k];
      if (g == 0) vectors[l.name] += rows.size(0);
    }
    return ideal(x);
  });
  try {
    ForwardCalibrationImages("placement: input moments", "the fault-map-aware placement's input moments");
  } catch (const InterruptedError&) {
    for (auto& s : layers_) s->moments.clear();  // partial sums: measured again by the next Program
    throw;
  }
  model_.SetLayerOverride(nullptr);
  for (auto& s : layers_) {
    const double v = static_cast<double>(std::max<int64_t>(1, vectors[s->info.name]));
    for (auto& m : s->moments) {
      for (double& x : m) x /= v;
    }
  }
}

void NetworkSimulator::Program(const FaultSpec& faults, uint64_t seed) {
  seed_ = seed;
  if (faults.placement && (layers_.empty() || layers_[0]->moments.empty())) ComputeInputMoments();
  for (auto& s : layers_) {
    s->folded_weight = torch::Tensor();
    s->folded_checked = false;
    s->folded_plan = ExactPlan();
  }
  FaultInjector injector(faults);
  int64_t crossbar = 0;
  for (auto& s : layers_) {
    for (auto& g : s->groups) {
      const size_t gi = static_cast<size_t>(&g - s->groups.data());
      g->Program(&injector, DeriveSeed(seed, "program"), crossbar, faults.placement ? &s->moments[gi] : nullptr);
      crossbar += g->crossbars();
    }
  }
  injector.CheckAllUsed(crossbar);
  XBAR_CHECK(!map_.adc_calibrated || calibration_images_.defined(), "Calibrate() before Program() with calibrated ADC ranges");
  if (map_.adc_calibrated) CalibrateAdc();
}

EvalResult NetworkSimulator::Evaluate(const Dataset& data, SimMode mode, int64_t batch_size, torch::Device device) {
  UseDevice(device);
  model_.eval();
  model_.to(device);
  if (mode == SimMode::kFloat) return xbar::Evaluate(model_, data, batch_size, device);
  std::map<std::string, LayerState*> by_name;
  for (auto& s : layers_) {
    by_name[s->info.name] = s.get();
    if (mode == SimMode::kCrossbar) {
      s->reads = {};
      s->err2 = s->err2_ref = s->ref2 = s->float2 = 0;
      s->vectors = 0;
    }
  }
  // Statistics on the first stats_images_ test images (0: all); a batch never straddles that
  // boundary, so which images are measured does not depend on the batch size.
  const bool want_stats = mode == SimMode::kCrossbar && stats_;
  const int64_t stats_n = !want_stats ? 0 : stats_images_ > 0 ? std::min(stats_images_, data.size()) : data.size();
  collect_ = false;
  model_.SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) {
    return RunLayer(*by_name.at(l.name), l, x, ideal, mode);
  });
  EvalResult total;
  double loss = 0;
  int64_t correct = 0;
  {
    torch::NoGradGuard no_grad;
    const int64_t batches = (stats_n + batch_size - 1) / batch_size + (data.size() - stats_n + batch_size - 1) / batch_size;
    const char* what = mode == SimMode::kCrossbar ? "simulate" : "simulate (ideal crossbar)";
    Progress bar(what, std::max<int64_t>(batches, 1), stderr, -1, progress_interval_s_);
    for (int64_t start = 0, b = 0, n = 0; start < data.size(); start += n, ++b) {
      if (InterruptRequested()) {
        model_.SetLayerOverride(nullptr);
        collect_ = false;
        throw InterruptedError(StrCat("interrupted after ", start, " of ", data.size(), " test images; nothing was written"));
      }
      image_offset_ = start;
      n = std::min(batch_size, (start < stats_n ? stats_n : data.size()) - start);
      collect_ = start < stats_n;
      torch::Tensor out = model_.forward(data.images.slice(0, start, start + n).to(device));
      torch::Tensor y = data.labels.slice(0, start, start + n).to(device);
      // Per-image losses summed in image order: the total does not depend on the batch size.
      torch::Tensor per_image = torch::nn::functional::cross_entropy(
                                    out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
                                    .to(torch::kCPU, torch::kFloat64).contiguous();
      for (int64_t i = 0; i < per_image.numel(); ++i) loss += per_image.data_ptr<double>()[i];
      correct += out.argmax(1).eq(y).sum().item<int64_t>();
      if (!quiet_ && (bar.Due() || b + 1 == batches)) {
        bar.Update(b + 1, StrCat("acc ", 100.0 * static_cast<double>(correct) / static_cast<double>(start + n), "%"));
      }
    }
    if (mode == SimMode::kCrossbar && !quiet_) bar.Finish(StrCat("acc ", data.size() > 0 ? 100.0 * static_cast<double>(correct) / static_cast<double>(data.size()) : 0.0, "%"));
  }
  image_offset_ = 0;
  model_.SetLayerOverride(nullptr);
  collect_ = false;
  if (mode == SimMode::kCrossbar) evaluated_images_ = stats_n;
  total.count = data.size();
  total.loss = total.count > 0 ? loss / static_cast<double>(total.count) : 0;
  total.accuracy = total.count > 0 ? static_cast<double>(correct) / static_cast<double>(total.count) : 0;
  return total;
}

torch::Tensor NetworkSimulator::Forward(const torch::Tensor& x, SimMode mode) {
  UseDevice(x.device());
  model_.eval();
  torch::NoGradGuard no_grad;
  if (mode == SimMode::kFloat) return model_.forward(x);
  std::map<std::string, LayerState*> by_name;
  for (auto& s : layers_) by_name[s->info.name] = s.get();
  collect_ = false;
  image_offset_ = 0;
  model_.SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& in, const LayerFn& ideal) {
    return RunLayer(*by_name.at(l.name), l, in, ideal, mode);
  });
  torch::Tensor out;
  try {
    out = model_.forward(x);
  } catch (...) {
    model_.SetLayerOverride(nullptr);
    throw;
  }
  model_.SetLayerOverride(nullptr);
  return out;
}

std::vector<LayerSimReport> NetworkSimulator::Report() const {
  std::vector<LayerSimReport> out;
  int64_t crossbar = 0;
  for (const auto& s : layers_) {
    LayerSimReport r;
    r.name = s->info.name;
    r.groups = s->info.groups;
    r.first_crossbar = crossbar;
    r.lossless = true;
    double nominal = 0, effective = 0;
    for (const auto& g : s->groups) {
      r.rows = g->rows();
      r.cols += g->cols();
      r.tiles += g->tiles();
      r.crossbars += g->crossbars();
      r.cells += g->cells();
      r.used_rows += g->used_rows();
      r.used_columns += g->used_columns();
      r.mean_level += g->level_sum();
      r.adc_bits = std::max(r.adc_bits, g->adc_bits());
      r.sa0 += g->sa0_cells();
      r.sa1 += g->sa1_cells();
      r.lossless = r.lossless && g->lossless();
      r.weight_scale = g->weight_scale();
      nominal += g->read_current_nominal();
      effective += g->read_current_effective();
    }
    r.read_current_ratio = nominal > 0 ? effective / nominal : 1.0;
    crossbar += r.crossbars;
    r.mean_level = r.cells > 0 ? r.mean_level / (static_cast<double>(r.cells) * static_cast<double>(map_.levels())) : 0.0;
    r.positions = evaluated_images_ > 0 ? static_cast<double>(s->vectors) / static_cast<double>(evaluated_images_) : 0.0;
    r.vectors = s->vectors;
    r.adc_conversions = s->reads.adc_conversions;
    r.output_nmse = s->float2 > 0 ? s->err2 / s->float2 : 0.0;
    r.output_nmse_reference = s->ref2 > 0 ? s->err2_ref / s->ref2 : 0.0;
    r.input_cycles = map_.InputCycles(s->signed_inputs);
    r.input_cycles_skipped = s->reads.input_cycles > 0
                                 ? 1.0 - static_cast<double>(s->reads.input_cycles_needed) /
                                             static_cast<double>(s->reads.input_cycles)
                                 : 0.0;
    r.signed_inputs = s->signed_inputs;
    r.input_scale = s->input_scale;
    out.push_back(r);
  }
  return out;
}

nlohmann::ordered_json SimulateJson(const std::string& scheme, double accuracy, double accuracy_reference,
                                    double accuracy_quantized, const std::vector<LayerSimReport>& layers) {
  nlohmann::ordered_json ls = nlohmann::ordered_json::array();
  int64_t crossbars = 0, conversions = 0, sa0 = 0, sa1 = 0;
  for (const auto& r : layers) {
    crossbars += r.crossbars;
    conversions += r.adc_conversions;
    sa0 += r.sa0;
    sa1 += r.sa1;
    ls.push_back({{"name", r.name},
                  {"rows", r.rows},
                  {"cols", r.cols},
                  {"groups", r.groups},
                  {"tiles", r.tiles},
                  {"crossbars", r.crossbars},
                  {"first_crossbar", r.first_crossbar},
                  {"cells", r.cells},
                  {"positions", r.positions},
                  {"adc_bits", r.adc_bits},
                  {"adc_conversions", r.adc_conversions},
                  {"adc_conversions_per_image", r.positions > 0 && r.vectors > 0
                                                    ? static_cast<double>(r.adc_conversions) * r.positions / static_cast<double>(r.vectors)
                                                    : 0.0},
                  {"output_nmse", r.output_nmse},
                  {"output_nmse_reference", r.output_nmse_reference},
                  {"input_cycles", r.input_cycles},
                  {"input_cycles_skipped", r.input_cycles_skipped},
                  {"signed_inputs", r.signed_inputs},
                  {"weight_scale", r.weight_scale},
                  {"input_scale", r.input_scale},
                  {"stuck_off_cells", r.sa0},
                  {"stuck_on_cells", r.sa1},
                  {"read_current_ratio", r.read_current_ratio},
                  {"lossless", r.lossless}});
  }
  return {{"schema_version", 1},
          {"scheme", scheme},
          {"accuracy", accuracy},
          {"accuracy_reference", accuracy_reference},
          {"accuracy_quantized", accuracy_quantized},
          {"crossbars", crossbars},
          {"adc_conversions", conversions},
          {"stuck_off_cells", sa0},
          {"stuck_on_cells", sa1},
          {"layers", ls}};
}

double NetworkSimulator::placement_seconds() const {
  double s = 0;
  for (const auto& l : layers_) {
    for (const auto& g : l->groups) s += g->placement_seconds();
  }
  return s;
}

std::vector<LayerPlacementReport> NetworkSimulator::Placements() const {
  std::vector<LayerPlacementReport> out;
  int64_t crossbar = 0;
  for (const auto& s : layers_) {
    for (const auto& g : s->groups) {
      LayerPlacementReport r;
      r.name = g->name();
      r.seconds = g->placement_seconds();
      r.harm_before = g->placement_harm_before();
      r.harm_after = g->placement_harm_after();
      for (int64_t t = 0; t < g->tiles(); ++t) {
        const TilePlacement& pl = g->placement(t);
        const int64_t first = crossbar + t * map_.scheme->ArraysPerTile();
        if (pl.empty()) continue;
        TilePlacementReport tr;
        tr.tile = t;
        tr.first_crossbar = first;
        const std::vector<int64_t>& rows = g->tile_rows(t);
        const std::vector<int64_t>& cols = g->tile_cols(t);
        tr.word_lines.assign(rows.size(), -1);
        tr.column_groups.assign(cols.size(), -1);
        for (size_t i = 0; i < rows.size(); ++i) tr.word_lines[static_cast<size_t>(pl.row[i])] = rows[i];
        for (size_t j = 0; j < cols.size(); ++j) tr.column_groups[static_cast<size_t>(pl.slot[j])] = cols[j];
        const int S = map_.slices();
        for (size_t c = 0; c < pl.flip.size(); ++c) {
          if (pl.flip[c]) tr.flipped.push_back({cols[c / static_cast<size_t>(S)], static_cast<int>(c % static_cast<size_t>(S))});
        }
        tr.harm_before = pl.cost_before;
        tr.harm_after = pl.cost_after;
        r.tiles.push_back(std::move(tr));
      }
      crossbar += g->crossbars();
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace xbar
