#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "xbar/crossbar/kernels.h"

namespace xbar {
namespace {

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

}  // namespace

void PackReads(CrossbarTile& t, int v) {
  t.packed.clear();
  t.plane_shift.clear();
  t.plane_negative.clear();
  t.words = 0;
  t.kernel = 0;
  // Only integer cells (no variation, drift or IR drop) without read noise have exact bit planes.
  if (t.noise_var.defined() || v > 8 || !t.reads.eq(t.reads.round()).all().item<bool>()) return;
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
  const int64_t G = t.groups, g = t.group_rows, NR = t.read_columns(), W = (g + 63) / 64;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  t.words = W;
  t.packed.assign(static_cast<size_t>(G * NP * W * NR + kConvertPad), 0);
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

torch::Tensor PackedSums(const CrossbarTile& t, const std::vector<uint64_t>& inputs, int64_t rows, int v) {
  const int64_t G = t.groups, NR = t.read_columns(), W = t.words;
  torch::Tensor out = torch::empty({G, rows, NR}, torch::kFloat32);
  float* op = out.data_ptr<float>();
  at::parallel_for(0, G * rows, 32, [&](int64_t i0, int64_t i1) {
    std::vector<int64_t> acc(static_cast<size_t>(NR));
    for (int64_t i = i0; i < i1; ++i) {
      PackedRow(t, i / rows, inputs.data() + i * v * W, W, v, acc.data());
      for (int64_t c = 0; c < NR; ++c) op[i * NR + c] = static_cast<float>(acc[static_cast<size_t>(c)]);
    }
  });
  return out;
}

}  // namespace xbar
