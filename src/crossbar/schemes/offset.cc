// offset (ISAAC): w + 2^(b_w - 1) stored unsigned in one column per slice; a unit column of
// level-1 cells reads the input sum, and bias x sum is subtracted digitally (SPEC §3, §5.1).
#include "digits.h"

namespace xbar::schemes {
namespace {

class OffsetScheme : public Scheme {
 public:
  const char* Name() const override { return "offset"; }
  int StoredBits(const Encoding& e) const override { return e.weight_bits; }
  int64_t Bias(const Encoding& e) const override { return int64_t{1} << (e.weight_bits - 1); }
  bool ZeroIsEmptyCell() const override { return false; }  // a zero weight stores the bias
  int64_t Level(int64_t q, int component, int slice, const Encoding& e) const override {
    return Digit(q + Bias(e), slice, e);
  }
};

}  // namespace

const Scheme& Offset() {
  static const OffsetScheme s;
  return s;
}

}  // namespace xbar::schemes
