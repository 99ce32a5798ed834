#include "xbar/crossbar/fault_map.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "xbar/core/error.h"

namespace xbar {

FaultMap ParseFaultMap(const std::string& text, const std::string& source) {
  FaultMap map;
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) f.push_back(cell);
    if (line_no == 1 && !f.empty() && f[0] == "crossbar") continue;  // header
    auto bad = [&](const std::string& why) {
      return InputError(StrCat(source, ":", line_no, ": ", why, "; expected crossbar,row,col,SA0|SA1"));
    };
    if (f.size() != 4) throw bad(StrCat(f.size(), " fields"));
    int64_t v[3];
    for (int i = 0; i < 3; ++i) {
      const std::string& s = f[static_cast<size_t>(i)];
      char* end = nullptr;
      errno = 0;
      const long long x = s.empty() || s[0] == '-' || s[0] == '+' || s[0] == ' ' ? -1 : std::strtoll(s.c_str(), &end, 10);
      if (x < 0 || errno != 0 || end != s.c_str() + s.size()) {
        throw bad(StrCat("'", s.substr(0, 40), s.size() > 40 ? "...'" : "'", " is not a non-negative integer"));
      }
      v[i] = x;
    }
    int8_t state = 0;
    if (f[3] == "SA0") {
      state = 1;
    } else if (f[3] == "SA1") {
      state = 2;
    } else {
      throw bad(StrCat("unknown fault type '", f[3].substr(0, 40), f[3].size() > 40 ? "..." : "", "'"));
    }
    map[v[0]].push_back({v[1], v[2], state, line_no});
  }
  return map;
}

}  // namespace xbar
