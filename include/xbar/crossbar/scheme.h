// xbar/crossbar/scheme.h — signed-weight encodings (SPEC §3) as types. Torch-free.
//
// A scheme says how a signed b_w-bit integer weight q becomes cell levels 0..L (L = 2^c - 1) on
// one or two components (a column pair, or two arrays), each split into S slices of c bits, and
// how the reads recombine: component signs, a unit column with a digital bias (ISAAC's offset),
// or a digital sign per fragment of rows (FORMS). The planner (plan.h), the engine (layer.h) and
// the cost model (hw.h) ask the scheme object; nothing else looks at a scheme's name.
//
//   const Scheme& s = FindScheme("complementary", "mapping.scheme");
//   Encoding e{/*weight_bits=*/8, /*cell_bits=*/2};
//   int64_t l = s.Level(-5, /*component=*/0, /*slice=*/0, e);   // 3 - 1 = 2 (L - digit)
//
// Adding a scheme: one file in src/crossbar/schemes/ defining a Scheme subclass and a function
// returning its instance, and one line in the registry (src/crossbar/scheme.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xbar {

// The bits a scheme encodes: b_w (including sign) and c.
struct Encoding {
  int weight_bits = 8;
  int cell_bits = 2;
  int64_t levels() const { return (int64_t{1} << cell_bits) - 1; }  // L
};

class Scheme {
 public:
  virtual ~Scheme() = default;
  // The config name (mapping.scheme).
  virtual const char* Name() const = 0;

  // ---- encoding ---------------------------------------------------------------------------
  // Bits stored over a weight's slices: its magnitude (b_w - 1), or the biased value (b_w).
  virtual int StoredBits(const Encoding& e) const { return e.weight_bits - 1; }
  // Slices S: cells of c bits holding the stored bits.
  int Slices(const Encoding& e) const { return (StoredBits(e) + e.cell_bits - 1) / e.cell_bits; }
  // Components per slice: 1, or 2 for a pair (two columns of one array, or two arrays).
  virtual int Components() const { return 1; }
  // True when a pair's two components sit on two separate arrays (two-crossbar).
  virtual bool SeparateArrays() const { return false; }
  // Level 0..L of slice `slice` (0 = least significant) of component `component` for integer q.
  virtual int64_t Level(int64_t q, int component, int slice, const Encoding& e) const = 0;
  // Digital sign of component `component`'s reads in the recombination (I_a - I_b).
  virtual double ComponentSign(int component) const { return component == 0 ? 1.0 : -1.0; }
  // The bias added to q before it is stored (offset: 2^(b_w - 1)); a unit column of level-1
  // cells then reads the input sum, subtracted digitally times the bias. 0 = no unit column.
  virtual int64_t Bias(const Encoding& e) const { return 0; }
  bool UnitColumn(const Encoding& e) const { return Bias(e) != 0; }
  // FORMS: every fragment of m rows of a column holds weights of one sign, kept as a digital sign
  // bit, and is converted by its own ADC read; rows are not compacted, so fragments stay aligned
  // with the rows compression polarised.
  virtual bool SignPerFragment() const { return false; }
  // Whether a zero weight is an empty (G_min) cell, so that a budget of non-zero weights per column
  // bounds the column current (TinyADC). Not so for complementary (zero = (L, L)) or offset (bias).
  virtual bool ZeroIsEmptyCell() const { return true; }

  // ---- layout and periphery (derived) ----------------------------------------------------------
  // A pair in neighbouring columns of one array (the only layout analog subtraction can use).
  bool PairInOneArray() const { return Components() == 2 && !SeparateArrays(); }
  // Physical arrays per tile (2 for two-crossbar).
  int64_t ArraysPerTile() const { return SeparateArrays() ? 2 : 1; }
  // Columns one weight takes on one array (both cells of an in-array pair).
  int64_t ColumnsPerWeight(const Encoding& e) const { return Slices(e) * (PairInOneArray() ? 2 : 1); }
  // Columns of an array of `cols` columns that weights can use (the unit column excluded).
  int64_t UsableColumns(int64_t cols, const Encoding& e) const { return cols - (UnitColumn(e) ? 1 : 0); }
  // Digital sign bits of a tile of `rows` x `outputs` weights, with fragments of m rows.
  int64_t SignBits(int64_t rows, int64_t outputs, int64_t fragment_rows) const {
    return SignPerFragment() && fragment_rows > 0 ? (rows + fragment_rows - 1) / fragment_rows * outputs : 0;
  }
};

// Every registered scheme's name, in registry order.
const std::vector<std::string>& SchemeNames();
// The scheme called `name`; ConfigError "<where>: unknown scheme 'x'; expected one of ..." otherwise.
const Scheme& FindScheme(const std::string& name, const std::string& where);

}  // namespace xbar
