#include "xbar/core/error.h"

#include <cstring>

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
