// complementary (ISQED'21 fault-tolerant "differential mapping"): one cell of every pair stays at
// the top level, (L, L - d) for w > 0 and (L - d, L) for w < 0 per slice digit d of |w|, and a zero
// weight is (L, L), so stuck-on faults on those cells cost nothing (SPEC §3).
#include <cstdlib>

#include "digits.h"

namespace xbar::schemes {
namespace {

class ComplementaryScheme : public Scheme {
 public:
  const char* Name() const override { return "complementary"; }
  int Components() const override { return 2; }
  bool ZeroIsEmptyCell() const override { return false; }  // a zero weight is (L, L)
  int64_t Level(int64_t q, int component, int slice, const Encoding& e) const override {
    const bool lowered = component == 0 ? q < 0 : q > 0;
    return e.levels() - (lowered ? Digit(std::llabs(q), slice, e) : 0);
  }
};

}  // namespace

const Scheme& Complementary() {
  static const ComplementaryScheme s;
  return s;
}

}  // namespace xbar::schemes
