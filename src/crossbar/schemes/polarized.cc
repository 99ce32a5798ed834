// polarized (FORMS): |w| in one column; every fragment of m rows of a column is single-signed,
// its sign kept as a digital sign bit and applied to the fragment's own ADC read (SPEC §2.2, §3).
#include <cstdlib>

#include "digits.h"

namespace xbar::schemes {
namespace {

class PolarizedScheme : public Scheme {
 public:
  const char* Name() const override { return "polarized"; }
  bool SignPerFragment() const override { return true; }
  int64_t Level(int64_t q, int component, int slice, const Encoding& e) const override {
    return Digit(std::llabs(q), slice, e);
  }
};

}  // namespace

const Scheme& Polarized() {
  static const PolarizedScheme s;
  return s;
}

}  // namespace xbar::schemes
