// xbar/crossbar/placement.h — fault-map-aware placement (issue 11): once a chip's stuck cells are
// known (tested after manufacturing), choose for every crossbar which input drives each of its
// word lines, which output each of its column groups serves and, for pair schemes, per (output,
// slice) column pair the direct or the complementary encoding, so the stuck cells do the least harm.
// Nothing is retrained; the crossbars keep their rows, columns and tiles (cost unchanged), and the
// permutations are index tables in the digital periphery (input register, shift-and-add).
//
// The harm of a placement is the expected squared output error the stuck cells cause,
//   cost = Σ_i Σ_j m_i (Δw_ij)²,   m_i = E[x_i²] over the calibration images,
// where Δw_ij is what the stuck cells under weight (i, j) change in its integer value (slices
// weighted 2^(c s), pair components by their signs, flipped columns negatively, the offset
// scheme's unit column by its bias, or with flipped columns by output j's unit coefficient).
// Encoding a pair the other way, (a, b) -> (L - b, L - a), keeps a - b: a stuck-on cell under a
// complementary zero (L, L) costs nothing, a stuck-off one under a direct zero (0, 0) neither.
// PlaceTile alternates two exact steps, each a minimum-cost assignment (Hungarian algorithm):
// outputs to column groups with the best encodings given the rows, then inputs to the faulty word
// lines given the columns, until the cost stops falling. FORMS fragments keep their rows.
//
//   PlacementProblem p{...};              // programmed levels, fault states, input moments
//   TilePlacement pl = PlaceTile(p);      // pl.cost_after <= pl.cost_before
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "xbar/crossbar/scheme.h"

namespace xbar {

struct TilePlacement {
  std::vector<int64_t> row;   // logical row i (tile order) -> physical word line (allocated rows, in order)
  std::vector<int64_t> slot;  // logical output j (tile order) -> physical column group
  std::vector<uint8_t> flip;  // [C * S]: pair j * S + s stored the other way (pair schemes; else empty)
  double cost_before = 0;     // harm with the mapping's own placement
  double cost_after = 0;      // harm with this one
  int rounds = 0;             // alternations run
  bool empty() const { return row.empty(); }
};

struct PlacementProblem {
  const Scheme* scheme = nullptr;
  Encoding encoding;
  torch::Tensor levels;       // [A, R, C * S] programmed levels, logical order (float)
  torch::Tensor unit;         // [R] offset scheme's unit column levels, or undefined
  torch::Tensor states;       // [A, R, C * S] fault state at physical (word line r, group p, slice s): 0 ok, 1 SA0, 2 SA1
  torch::Tensor unit_states;  // [R] the unit column's, or undefined
  std::vector<double> moments;  // [R] E[x_i²] of logical row i's input
  int64_t fragment_rows = 0;  // rows stay within fragments of this many (FORMS); 0: anywhere in the tile
  torch::Tensor fragment_sign;  // FORMS: [fragments, C] digital sign per fragment and output (0: its cells are not read)
  // Flipped encoding (mapping.flip_columns): -1 for each logical column j * S + s stored as L - level
  // (empty: none), and per output the digital weight of the unit column's read (empty: -bias).
  std::vector<double> column_sign, unit_coef;
};

// The placement with the least harm PlaceTile finds (never more than the identity's).
TilePlacement PlaceTile(const PlacementProblem& p);
// The harm of placement `pl` (empty: the identity) on problem `p`.
double PlacementCost(const PlacementProblem& p, const TilePlacement& pl);
// The fault state every logical cell sees under `pl`: out[a][i][j S + s] = states[a][row[i]][slot[j] S + s].
torch::Tensor PlacedStates(const TilePlacement& pl, int slices, const torch::Tensor& states);
torch::Tensor PlacedUnitStates(const TilePlacement& pl, const torch::Tensor& unit_states);
// Stores the flipped pairs of `levels` [2, R, C * S] the other way: (a, b) -> (L - b, L - a).
void ApplyFlips(const TilePlacement& pl, double top_level, torch::Tensor& levels);

// Minimum-cost assignment of each of n rows to a distinct one of m >= n columns (cost row-major,
// n x m): result[i] = row i's column. O(n² m).
std::vector<int64_t> MinCostAssignment(const std::vector<double>& cost, int64_t n, int64_t m);

}  // namespace xbar
