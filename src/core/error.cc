#include "xbar/core/error.h"

#include <cstring>

namespace xbar {

std::string OneLineMessage(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += ' ';
    } else if (u < 0x20 || u == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace xbar

namespace xbar::detail {

void CheckFailed(const char* file, int line, const char* cond, const std::string& msg) {
  // Keep only the path below the project root so messages are stable across checkouts.
  const char* shown = file;
  for (const char* key : {"/src/", "/include/", "/apps/", "/tests/"}) {
    if (const char* p = std::strstr(file, key)) {
      shown = p + 1;
      break;
    }
  }
  throw InternalError(StrCat(shown, ":", line, ": internal check '", cond, "' failed",
                             msg.empty() ? "" : ": ", msg));
}

}  // namespace xbar::detail
