// xbar/crossbar/kernels.h — the engine's exact sum kernels besides the float GEMM: AND + popcount
// over bit-packed input digits and cell planes (integer-valued cells only). A column sum of g rows
// is sum_k 2^k sum_p ±2^shift_p popcount(x_k & cells_p) over the v input bits k and the cell planes
// p (positive and negative parts of every read), so it is exact at any size.
//
//   PackReads(tile, map.dac_bits);                        // once per programming (words = 0: not packable)
//   std::vector<uint64_t> x = PackInputs(xg, v);          // xg [G, rows, g] digits 0 .. 2^v - 1
//   torch::Tensor sums = PackedSums(tile, x, rows, v);    // [G, rows, NR], equal to bmm(xg, tile.reads)
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "xbar/crossbar/tile.h"

namespace xbar {

// Input digit planes [G, rows, g] (integers 0..2^v - 1) as packed words [G * rows][v][words].
std::vector<uint64_t> PackInputs(const torch::Tensor& xg, int v);
// Packs the tile's read matrix into bit planes; leaves tile.words = 0 (not packable) when a read
// value is not an integer, read noise is on, or v > 8.
void PackReads(CrossbarTile& t, int v);
// Column sums of one input row (words [v][words]) on group `group`: acc[NR].
void PackedRow(const CrossbarTile& t, int64_t group, const uint64_t* x, int v, int64_t* acc);
// Column sums [G, rows, NR] from inputs packed by PackInputs.
torch::Tensor PackedSums(const CrossbarTile& t, const std::vector<uint64_t>& inputs, int64_t rows, int v);

}  // namespace xbar
