// xbar/crossbar/ir_drop.h — IR drop on a crossbar's word and bit lines (SPEC §4).
//
// The array: word line i is driven at its left end with the input voltage V_i (0 V for a zero
// input digit), bit line j is held at virtual ground by its sense amplifier below the last row,
// cell (i, j) of conductance G_ij joins word-line node (i, j) and bit-line node (i, j), and every
// segment of wire between neighbouring nodes (and from the driver to the first cell, and from the
// last cell to the sense amplifier) has resistance r. The network is linear, so the column currents
// are I_j = sum_i Geff_ij V_i for an effective conductance matrix Geff that depends only on G and r:
// IR drop is a property of the programmed array, computed once, not per input.
//
// Two models of Geff:
//  * kExact: the nodal equations (2 R C unknowns, Kirchhoff's current law at every node), a
//    symmetric positive definite system of half-bandwidth 2 C, by banded Cholesky and one solve per
//    unit input: O(R C^3), 0.7 s for 128 x 128 (0.23 ms fast) (R·C <= kIrDropExactMaxCells); the
//    reference the fast model is tested against.
//  * kFast: first order in r, in the form Geff_sj = G_sj / (1 + r (A_sj + B_sj)), with
//    A_sj = sum_l G_sl (min(j, l) + 1) the word-line drop a unit input on row s causes at column j
//    and B_sj = sum_i G_ij (R - max(i, s)) the bit-line rise it causes, summed over the cells that
//    feel it. O(R C) per array with prefix sums; column currents within 0.03 % of the exact solve
//    at 4 % average drop, 1.4 % at 29 %, 5.6 % at 55 % (tests/crossbar, docs/RESULTS.md).
//
//   torch::Tensor geff = IrDropEffective(g_siemens, /*wire_ohm=*/2.5, IrDropModel::kFast);   // [R, C]
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "xbar/crossbar/spec.h"  // kIrDropExactMaxCells

namespace xbar {

enum class IrDropModel { kFast, kExact };

// Effective conductances [R, C] (float64, siemens) of an array of cell conductances g [R, C]
// (siemens) with wire resistance `wire_ohm` per segment.
torch::Tensor IrDropEffective(const torch::Tensor& g, double wire_ohm, IrDropModel model);

}  // namespace xbar
