// The exact fast path's elementwise passes (kernels.h): the input quantisation and the scaling of a
// layer's integer sums, each one pass over memory instead of the three to five tensor ops (and the
// float64 temporaries) they replace, with the same bits. Compiled without fused multiply-add
// contraction (CMakeLists.txt): sum · scale + bias rounds twice, as the tensor ops do.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "xbar/crossbar/kernels.h"

namespace xbar {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel chunk (ATen's elementwise grain)

// sum(i): the exact integer sum at element i (one float64 value, or float32 parts added in float64).
template <typename Sum>
void ScaleSumsImpl(const Sum sum, float* y, int64_t n, const double scale, const double* bias, const int64_t channels,
                   const int64_t plane) {
  // Everything captured by value, y restrict-qualified: the inner loops vectorise.
  if (bias == nullptr) {
    at::parallel_for(0, n, kGrain, [sum, y, scale](int64_t i0, int64_t i1) {
      float* __restrict out = y;
      for (int64_t i = i0; i < i1; ++i) out[i] = static_cast<float>(sum(i) * scale);
    });
    return;
  }
  if (plane == 1) {
    // [rows, channels]: runs along a row, the bias read alongside.
    at::parallel_for(0, n, kGrain, [sum, y, scale, bias, channels](int64_t i0, int64_t i1) {
      float* __restrict out = y;
      const double* __restrict b = bias;
      for (int64_t i = i0; i < i1;) {
        const int64_t row0 = i - i % channels, run_end = std::min(i1, row0 + channels);
        for (; i < run_end; ++i) out[i] = static_cast<float>(sum(i) * scale + b[i - row0]);
      }
    });
    return;
  }
  // Runs of one channel: [i0, i1) split at plane boundaries, the bias constant within a run.
  at::parallel_for(0, n, kGrain, [sum, y, scale, bias, channels, plane](int64_t i0, int64_t i1) {
    float* __restrict out = y;
    for (int64_t i = i0; i < i1;) {
      const int64_t run_end = std::min(i1, (i / plane + 1) * plane);
      const double b = bias[(i / plane) % channels];
      for (; i < run_end; ++i) out[i] = static_cast<float>(sum(i) * scale + b);
    }
  });
}

}  // namespace

void QuantizeCodes(const float* x, float* q, int64_t n, float scale, float lo, float hi) {
  // Captured by value and restrict-qualified: stores to q cannot alias the loop's inputs, so it
  // vectorises.
  at::parallel_for(0, n, kGrain, [x, q, scale, lo, hi](int64_t i0, int64_t i1) {
    const float* __restrict src = x;
    float* __restrict dst = q;
    for (int64_t i = i0; i < i1; ++i) {
      const float r = std::nearbyint(src[i] / scale);
      // Selects, not min/max: a NaN fails both tests and stays NaN, as torch.clamp keeps it (and the
      // loop vectorises).
      dst[i] = r < lo ? lo : (r > hi ? hi : r);
    }
  });
}

void ScaleSums(const float* const* parts, int64_t num_parts, float* y, int64_t n, double scale, const double* bias,
               int64_t channels, int64_t plane) {
  if (num_parts == 1) {
    const float* p = parts[0];
    ScaleSumsImpl([p](int64_t i) { return static_cast<double>(p[i]); }, y, n, scale, bias, channels, plane);
  } else if (num_parts == 2) {
    const float *p = parts[0], *q = parts[1];
    ScaleSumsImpl([p, q](int64_t i) { return static_cast<double>(p[i]) + static_cast<double>(q[i]); }, y, n, scale,
                  bias, channels, plane);
  } else {
    ScaleSumsImpl(
        [parts, num_parts](int64_t i) {
          double s = 0;
          for (int64_t k = 0; k < num_parts; ++k) s += static_cast<double>(parts[k][i]);
          return s;
        },
        y, n, scale, bias, channels, plane);
  }
}

void ScaleSums(const double* sums, float* y, int64_t n, double scale, const double* bias, int64_t channels,
               int64_t plane) {
  ScaleSumsImpl([sums](int64_t i) { return sums[i]; }, y, n, scale, bias, channels, plane);
}

void PlanesOfRow(const float* __restrict x, uint8_t* __restrict dst, const int64_t n, const int dac_bits,
                 const uint8_t all) {
  // Branch-free, so the loop vectorises (with -fno-trapping-math: CMakeLists.txt): for x >= 1 the
  // bit length of floor(x) is the float's unbiased exponent + 1 (0 below 1), and ceil(b / d) =
  // floor((b + d - 1 + 0.5) / d) in float32 (exact: b + d stays far below 2^24, and the 0.5 keeps
  // the product off an integer).
  const float inv = 1.0f / static_cast<float>(dac_bits);
  const float add = static_cast<float>(dac_bits - 1) + 0.5f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    int32_t u;
    std::memcpy(&u, &v, sizeof u);
    const int32_t bits = v >= 1.0f ? ((u >> 23) & 0xff) - 126 : 0;
    const int32_t planes = std::min(static_cast<int32_t>((static_cast<float>(bits) + add) * inv), 255);
    dst[i] = static_cast<uint8_t>(v < 0.0f ? static_cast<int32_t>(all) : planes);
  }
}

}  // namespace xbar
