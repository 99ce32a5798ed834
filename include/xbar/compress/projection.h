// xbar/compress/projection.h — Euclidean projections of a layer's weights onto crossbar constraint
// sets (SPEC §2.2), without LibTorch.
//
// A layer's weights are seen in crossbar orientation: rows = inputs (K = in·kh·kw, word lines),
// columns = outputs (N = out, bit lines), cut into R×C tiles. Element (r, c) lives at
// data[c·K + r], which is exactly the memory of a PyTorch weight [out, in, kh, kw] (or [out, in]),
// so a contiguous weight tensor is projected in place without copies.
//
// Every operator is the exact Euclidean projection onto its set (ties broken towards the lower
// index, so results are deterministic), except `crossbar-block`, whose set (at most k_r row
// segments AND at most k_c column segments) has no cheap exact projection: it is approximated by
// alternating exact row and column projections, and is still feasible and idempotent.
//
//   CrossbarMatrix m{w.data_ptr<float>(), K, N};
//   LayerConstraints c;  c.structure = Structure::kFilter;  c.sparsity = 0.5;  c.quantize_bits = 4;
//   ProjectionResult r = Project(m, c);      // prune -> polarise -> budget -> quantise
//   ConstraintReport rep = CheckConstraints(m, c, r.scale);   // rep.violations == 0
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xbar {

struct CrossbarMatrix {
  float* data = nullptr;
  int64_t rows = 0;  // K: inputs
  int64_t cols = 0;  // N: outputs
  float& at(int64_t r, int64_t c) const { return data[c * rows + r]; }
  int64_t size() const { return rows * cols; }
};

struct Tiling {
  int64_t rows = 128;  // R: word lines per crossbar
  int64_t cols = 128;  // C: bit lines per crossbar
};

enum class Structure {
  kUnstructured,    // any weights
  kFilter,          // whole outputs (GEMM columns)
  kColumn,          // whole GEMM rows: one (in, kh, kw) position across all filters ("shape")
  kChannel,         // all kh·kw rows of an input channel
  kCrossbarRow,     // a word-line segment: one row inside one tile column block
  kCrossbarColumn,  // a bit-line segment: one column inside one tile row block
  kCrossbarBlock,   // row and column segments together (approximate projection, see above)
  kCrossbarTile,    // whole R×C tiles
};
const char* StructureName(Structure s);
bool ParseStructure(const std::string& name, Structure* out);
const std::vector<std::string>& StructureNames();

struct LayerConstraints {
  Structure structure = Structure::kUnstructured;
  double sparsity = 0.0;          // fraction of the structure's groups removed, in [0, 1)
  int64_t kernel_area = 1;        // kh·kw, for channel pruning
  int quantize_bits = 0;          // weight bits including sign; 0 = keep floats
  int64_t polarize_fragment = 0;  // m rows per single-signed fragment; 0 = off
  int64_t column_budget = 0;      // max non-zeros per column segment of a tile; 0 = off
  Tiling tile;

  bool prunes() const { return sparsity > 0.0; }
  // Names for reports, e.g. {"sparsity:filter:0.5", "polarize:8", "budget:16", "quantize:4"}.
  std::vector<std::string> Names() const;
};

// ---- single projections (in place) ----------------------------------------------------------

// Keeps the `keep` entries of largest magnitude.
void ProjectTopK(CrossbarMatrix m, int64_t keep);
// Number of groups of a structure for a K×N matrix (elements for kUnstructured).
int64_t GroupCount(const CrossbarMatrix& m, const LayerConstraints& c);
// Groups kept for the constraint's sparsity (at least 1 when the matrix has any group).
int64_t KeepCount(int64_t groups, double sparsity);
// Keeps the `keep` groups of largest L2 norm for a structured pruning (not kUnstructured/kCrossbarBlock).
void ProjectGroups(CrossbarMatrix m, const LayerConstraints& c, int64_t keep);
// The row and column segments kept by the crossbar-block projection of a K×N matrix: rows[j*K + r]
// for row r inside tile column j, cols[i*N + c] for column c inside tile row i.
struct CrossbarBlockSelection {
  std::vector<char> rows, cols;
};
// Chooses keep_rows row segments and keep_cols column segments (exactly, when there are that many)
// by alternating exact projections -- column segments given the kept row segments, then row
// segments given the kept column segments -- until neither changes: a fixed point of both, not
// necessarily the joint optimum (that is a densest-submatrix problem).
CrossbarBlockSelection SelectCrossbarBlock(const CrossbarMatrix& m, const Tiling& t, int64_t keep_rows,
                                           int64_t keep_cols);
// Row and column segments (kCrossbarBlock): zeroes everything outside SelectCrossbarBlock's choice.
void ProjectCrossbarBlock(CrossbarMatrix m, const Tiling& t, int64_t keep_rows, int64_t keep_cols);
// Makes every fragment of m consecutive rows of a column (restarting at tile row boundaries)
// single-signed, zeroing the side with the smaller sum of squares (ties keep the positive side).
void ProjectPolarize(CrossbarMatrix m, int64_t fragment, int64_t tile_rows);
// Keeps the `budget` largest magnitudes in each column segment of each tile row block.
void ProjectColumnBudget(CrossbarMatrix m, int64_t budget, int64_t tile_rows);
// Quantises to {0, ±s, …, ±n·s}, n = 2^(bits-1) - 1, with the scale s minimising the squared
// error: exact for up to 65,536 non-zeros; larger matrices search s on an evenly strided sample of
// 65,536 of them and refine it by one Lloyd step on all entries (measured within 0.2 % of the best
// squared error at 8 bits). Zeros stay zero, signs are kept. Returns s (0 when all zero).
double ProjectQuantize(CrossbarMatrix m, int bits);
// Rounds to the levels of a fixed scale (masked retraining keeps s fixed).
void QuantizeWithScale(CrossbarMatrix m, int bits, double scale);
// The squared-error-optimal scale for magnitudes `mags` (> 0) and n positive levels.
double OptimalScale(std::vector<float> mags, int64_t n);

// ---- composition and verification -----------------------------------------------------------

struct ProjectionResult {
  double scale = 0.0;  // quantisation scale (0 when not quantised)
};
// prune -> polarise -> column budget -> quantise. Each later step keeps the earlier constraints
// (it only zeroes entries or rounds them to a level of the same sign), so the result satisfies all.
ProjectionResult Project(CrossbarMatrix m, const LayerConstraints& c);

struct ConstraintReport {
  int64_t nonzero = 0;
  int64_t groups_nonzero = 0, groups_allowed = 0;  // of the pruning structure
  int64_t violations = 0;                          // sum over all constraints; must be 0
  int64_t distinct_levels = 0;                     // distinct values including 0
  std::vector<std::string> failed;                 // names of violated constraints
};
// Checks every constraint of `c` exactly (quantisation against `scale`, to float rounding).
ConstraintReport CheckConstraints(const CrossbarMatrix& m, const LayerConstraints& c, double scale);

}  // namespace xbar
