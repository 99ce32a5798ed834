// xbar/crossbar/kernels.h — the engine's sum kernels: a fixed-order float kernel for any read
// values (FloatSums), and the exact kernels for integer-valued cells: AND + popcount
// over bit-packed input digits and cell planes (integer-valued cells only). A column sum of g rows
// is sum_k 2^k sum_p ±2^shift_p popcount(x_k & cells_p) over the v input bits k and the cell planes
// p (positive and negative parts of every read), so it is exact at any size.
//
//   PackReads(tile, map.dac_bits);                        // once per programming (words = 0: not packable)
//   std::vector<uint64_t> x = PackInputs(xg, v);          // xg [G, rows, g] digits 0 .. 2^v - 1
//   torch::Tensor sums = PackedSums(tile, x, rows, v);    // [G, rows, NR], equal to bmm(xg, tile.reads)
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xbar/crossbar/tile.h"

namespace xbar {

// Input digit planes [G, rows, g] (integers 0..2^v - 1) as packed words [G * rows][v][words].
std::vector<uint64_t> PackInputs(const torch::Tensor& xg, int v);
// Packs the tile's read matrix into bit planes; leaves tile.words = 0 (not packable) when a read
// value is not an integer, read noise is on, or v > 8.
void PackReads(CrossbarTile& t, int v);
// Column sums of one input row (words [v][words]) on group `group`: acc[NR]. Inline: the engine
// calls it per row inside its ADC loop.
inline void PackedRow(const CrossbarTile& t, int64_t group, const uint64_t* x, int v, int64_t* acc);
// Column sums [G, rows, NR] from inputs packed by PackInputs.
torch::Tensor PackedSums(const CrossbarTile& t, const std::vector<uint64_t>& inputs, int64_t rows, int v);
// Column sums [G, rows, NR] of float reads [G, g, NR] (kernels/float.cc): bmm(xg, reads), each sum
// in row order, so its bits do not depend on where the row sits or on the thread count.
torch::Tensor FloatSums(const torch::Tensor& xg, const torch::Tensor& reads);

// ---- inline definitions ---------------------------------------------------------------------------

// acc[c] += popcount(x & col[c]) << shift over n columns (vectorises to vpopcntq on AVX-512).
inline void PopcountAdd(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  for (int64_t c = 0; c < n; ++c) acc[c] += static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}
inline void PopcountSub(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  for (int64_t c = 0; c < n; ++c) acc[c] -= static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}

inline void PackedRow(const CrossbarTile& t, int64_t group, const uint64_t* x, int v, int64_t* acc) {
  const int64_t NR = t.read_columns(), W = t.words;
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

}  // namespace xbar
