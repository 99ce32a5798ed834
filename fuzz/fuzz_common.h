// Shared by the libFuzzer harnesses (fuzz/README.md): an input either parses or throws xbar::Error
// with a one-line message; anything else (another exception, a crash, a sanitizer report, a leak,
// a hang) is a finding.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "xbar/core/error.h"

namespace xbar::fuzz {

template <typename F>
int Expect(const uint8_t* data, size_t size, F&& parse) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    parse(bytes);
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.empty() || m.find('\n') != std::string::npos || e.kind() == ErrorKind::kInternal) {
      std::fprintf(stderr, "finding: %s error message '%s'\n", e.kind() == ErrorKind::kInternal ? "internal" : "multi-line",
                   m.c_str());
      std::abort();
    }
  }
  return 0;
}

}  // namespace xbar::fuzz
