// The scheme registry: one line per scheme (its file is in schemes/).
#include "xbar/crossbar/scheme.h"

#include "xbar/core/error.h"

namespace xbar {
namespace schemes {
// One function per file in schemes/, returning the scheme's instance.
const Scheme& TwoColumn();
const Scheme& TwoCrossbar();
const Scheme& Offset();
const Scheme& Polarized();
const Scheme& Complementary();
}  // namespace schemes
namespace {

const std::vector<const Scheme*>& Registry() {
  static const std::vector<const Scheme*> schemes = {
      &schemes::TwoColumn(),
      &schemes::TwoCrossbar(),
      &schemes::Offset(),
      &schemes::Polarized(),
      &schemes::Complementary(),
  };
  return schemes;
}

}  // namespace

const std::vector<std::string>& SchemeNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Scheme* s : Registry()) v.emplace_back(s->Name());
    return v;
  }();
  return names;
}

const Scheme& FindScheme(const std::string& name, const std::string& where) {
  for (const Scheme* s : Registry()) {
    if (name == s->Name()) return *s;
  }
  std::string valid;
  for (const auto& n : SchemeNames()) valid += (valid.empty() ? "" : ", ") + n;
  throw ConfigError(StrCat(where, ": unknown scheme '", name, "'; expected one of ", valid));
}

}  // namespace xbar
