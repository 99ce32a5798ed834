// Max pooling without indices for inference (models/pool.h).
#include "xbar/models/pool.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

namespace xbar {
namespace {

// LibTorch's output size (pooling_output_shape): floor or ceil of the strided span, and with
// ceil_mode the last window must start inside the input or its left padding.
int64_t PooledSize(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// LibTorch's update rule: a strictly larger value or a NaN replaces the running maximum.
inline float Larger(float m, float v) { return (v > m || std::isnan(v)) ? v : m; }

}  // namespace

torch::Tensor MaxPool2d(const torch::Tensor& x, torch::IntArrayRef kernel, torch::IntArrayRef stride,
                        torch::IntArrayRef padding, torch::IntArrayRef dilation, bool ceil_mode) {
  auto two = [](torch::IntArrayRef a) { return a.size() == 2; };
  const bool mine = x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 && x.is_contiguous() &&
                    !(torch::GradMode::is_enabled() && x.requires_grad()) && two(kernel) && two(stride) &&
                    two(padding) && two(dilation);
  if (!mine) return torch::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode);
  const int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1];
  const int64_t dh = dilation[0], dw = dilation[1];
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0 || ph < 0 || pw < 0 || ph > kh / 2 ||
      pw > kw / 2 || C <= 0 || H <= 0 || W <= 0) {
    return torch::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode);  // its own error message
  }
  const int64_t OH = PooledSize(H, kh, sh, ph, dh, ceil_mode), OW = PooledSize(W, kw, sw, pw, dw, ceil_mode);
  if (OH <= 0 || OW <= 0) return torch::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode);
  torch::Tensor y = torch::empty({N, C, OH, OW}, x.options());
  const float* in = x.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const bool simple = kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1;
  at::parallel_for(0, N * C, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t plane = p0; plane < p1; ++plane) {
      const float* src = in + plane * H * W;
      float* dst = out + plane * OH * OW;
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t ih0 = oh * sh - ph;
        const int64_t ih1 = std::min(ih0 + (kh - 1) * dh + 1, H);
        while (ih0 < 0) ih0 += dh;
        if (simple && ih0 + 1 < H) {
          // 2 x 2, stride 2: the four values in LibTorch's order (row by row), the last window
          // clipped where the input ends (ceil_mode).
          const float* r0 = src + ih0 * W;
          const float* r1 = r0 + W;
          const int64_t full = std::min(OW, W / 2);
          for (int64_t ow = 0; ow < full; ++ow) {
            float m = Larger(-std::numeric_limits<float>::infinity(), r0[2 * ow]);
            m = Larger(m, r0[2 * ow + 1]);
            m = Larger(m, r1[2 * ow]);
            dst[oh * OW + ow] = Larger(m, r1[2 * ow + 1]);
          }
          for (int64_t ow = full; ow < OW; ++ow) {  // a last column of one input (ceil_mode)
            dst[oh * OW + ow] = Larger(Larger(-std::numeric_limits<float>::infinity(), r0[2 * ow]), r1[2 * ow]);
          }
          continue;
        }
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t iw0 = ow * sw - pw;
          const int64_t iw1 = std::min(iw0 + (kw - 1) * dw + 1, W);
          while (iw0 < 0) iw0 += dw;
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t ih = ih0; ih < ih1; ih += dh) {
            for (int64_t iw = iw0; iw < iw1; iw += dw) m = Larger(m, src[ih * W + iw]);
          }
          dst[oh * OW + ow] = m;
        }
      }
    }
  });
  return y;
}

}  // namespace xbar
