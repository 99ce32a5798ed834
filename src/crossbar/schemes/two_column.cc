// two-column: the traditional differential pair of neighbouring columns, (w, 0) for w > 0 and
// (0, |w|) for w < 0, recombined as I_a - I_b (SPEC §3).
#include "digits.h"

namespace xbar::schemes {
namespace {

class TwoColumnScheme : public Scheme {
 public:
  const char* Name() const override { return "two-column"; }
  int Components() const override { return 2; }
  int64_t Level(int64_t q, int component, int slice, const Encoding& e) const override {
    return Digit(PairPart(q, component), slice, e);
  }
};

}  // namespace

const Scheme& TwoColumn() {
  static const TwoColumnScheme s;
  return s;
}

}  // namespace xbar::schemes
