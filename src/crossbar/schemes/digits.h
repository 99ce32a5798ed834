// Private helpers of the scheme files: the c-bit digit of a non-negative stored value.
#pragma once

#include <cstdint>

#include "xbar/crossbar/scheme.h"

namespace xbar::schemes {

// Digit `slice` (c bits, least significant first) of a non-negative value.
inline int64_t Digit(int64_t value, int slice, const Encoding& e) { return (value >> (e.cell_bits * slice)) & e.levels(); }

// The part of q a pair's component holds: q for component 0 when q > 0, |q| for component 1 when
// q < 0, else 0 (two-column and two-crossbar).
inline int64_t PairPart(int64_t q, int component) { return component == 0 ? (q > 0 ? q : 0) : (q < 0 ? -q : 0); }

}  // namespace xbar::schemes
