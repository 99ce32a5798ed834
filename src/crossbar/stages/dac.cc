// Bit-serial inputs through v-bit DACs (SPEC §1): the first read-side stage.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "xbar/core/error.h"
#include "xbar/crossbar/stage.h"

namespace xbar {

DacStage::Planes DacStage::PlanesOf(bool signed_inputs) const {
  const int v = map_.dac_bits, b = map_.input_bits;
  Planes p;
  const int low_bits = signed_inputs ? b - 1 : b;
  for (int shift = 0; shift < low_bits; shift += v) {
    p.shift.push_back(shift);
    p.mask.push_back((int64_t{1} << std::min(v, low_bits - shift)) - 1);
    p.weight.push_back(std::ldexp(1.0, shift));
  }
  if (signed_inputs) {  // the two's-complement sign bit, shifted and subtracted
    p.shift.push_back(b - 1);
    p.mask.push_back(-1);  // u >> (b - 1) is the sign bit for every input in range
    p.weight.push_back(-std::ldexp(1.0, b - 1));
  }
  XBAR_CHECK(p.size() == map_.InputCycles(signed_inputs), "plane count");
  return p;
}

torch::Tensor DacStage::SplitOps(const torch::Tensor& xq, bool signed_inputs, const Planes& planes) const {
  torch::Tensor u = xq.to(torch::kInt64);
  if (signed_inputs) u = torch::where(u < 0, u + (int64_t{1} << map_.input_bits), u);
  std::vector<torch::Tensor> digits;
  for (int64_t p = 0; p < planes.size(); ++p) {
    // u >= 0: floor division by 2^shift is the right shift.
    const torch::Tensor shifted = torch::div(u, int64_t{1} << planes.shift[static_cast<size_t>(p)], "floor");
    digits.push_back(torch::bitwise_and(shifted, planes.mask[static_cast<size_t>(p)]).to(torch::kFloat32));
  }
  return torch::stack(digits);
}

torch::Tensor DacStage::Split(const torch::Tensor& xq, bool signed_inputs, const Planes& planes) const {
  if (!xq.is_cpu()) return SplitOps(xq, signed_inputs, planes);
  const int64_t M = xq.size(0), K = xq.size(1), P = planes.size();
  torch::Tensor out = torch::empty({P, M, K}, torch::kFloat32);
  const float* xp = xq.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t MK = M * K;
  const int64_t wrap = int64_t{1} << map_.input_bits;
  at::parallel_for(0, MK, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t p = 0; p < P; ++p) {
      const int shift = planes.shift[static_cast<size_t>(p)];
      const int64_t mask = planes.mask[static_cast<size_t>(p)];
      float* o = dst + p * MK;
      if (map_.input_bits <= 30) {
        // int32 lanes: AVX2 converts float <-> int32 in vectors but not float <-> int64 (AVX-512DQ
        // does), so this loop vectorises on both; the digits are the same integers.
        const int32_t add = signed_inputs ? static_cast<int32_t>(wrap) : 0, mask32 = static_cast<int32_t>(mask);
        for (int64_t i = i0; i < i1; ++i) {
          const auto x = static_cast<int32_t>(xp[i]);
          o[i] = static_cast<float>(((x + (x < 0 ? add : 0)) >> shift) & mask32);
        }
        continue;
      }
      for (int64_t i = i0; i < i1; ++i) {
        const auto x = static_cast<int64_t>(xp[i]);
        const int64_t u = signed_inputs && x < 0 ? x + wrap : x;
        o[i] = static_cast<float>((u >> shift) & mask);
      }
    }
  });
  return out;
}

}  // namespace xbar
