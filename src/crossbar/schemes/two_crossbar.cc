// two-crossbar: positive and negative weights on two arrays (PRIME-like, the ISLPED'19
// framework), the same cell values as two-column, subtracted digitally (SPEC §3).
#include "digits.h"

namespace xbar::schemes {
namespace {

class TwoCrossbarScheme : public Scheme {
 public:
  const char* Name() const override { return "two-crossbar"; }
  int Components() const override { return 2; }
  bool SeparateArrays() const override { return true; }
  int64_t Level(int64_t q, int component, int slice, const Encoding& e) const override {
    return Digit(PairPart(q, component), slice, e);
  }
};

}  // namespace

const Scheme& TwoCrossbar() {
  static const TwoCrossbarScheme s;
  return s;
}

}  // namespace xbar::schemes
