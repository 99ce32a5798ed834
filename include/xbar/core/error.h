// xbar/core/error.h — the two tiers of errors used everywhere in xbar.
//
// Expected failures (a bad config value, an unreadable data file, a model file that does not match
// the architecture) are thrown as a typed xbar::Error whose message is ONE line naming the file,
// key or value at fault and what was expected. Broken invariants use XBAR_CHECK, which throws an
// InternalError carrying file:line. Only apps/xbar/main.cc turns errors into exit codes.
//
//   if (bits < 2) throw ConfigError(StrCat(file, ": compress.quantize_bits: expected >= 2, got ", bits));
//   XBAR_CHECK(w.dim() == 2, "expected a GEMM matrix, got ", w.dim(), " dims");
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace xbar {

// Exit codes of the command-line tool (docs/INTERFACE.md).
enum class ErrorKind {
  kInternal = 1,     // anything else: a bug or an unexpected system failure
  kConfig = 2,       // bad usage or config
  kInput = 3,        // unreadable or invalid input data or model file
  kInterrupted = 4,  // stopped by a signal; the run is resumable
};

// The message with control characters (a newline, a byte quoted from a corrupt file) written as
// escapes (\n, \x07), so that every error stays one printable line.
std::string OneLineMessage(const std::string& message);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(OneLineMessage(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return static_cast<int>(kind_); }

 private:
  ErrorKind kind_;
};

// Bad usage or configuration: an unknown key, a value of the wrong type or out of range.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& m) : Error(ErrorKind::kConfig, m) {}
};

// An input data or model file that is missing, truncated, corrupt or does not fit.
class InputError : public Error {
 public:
  explicit InputError(const std::string& m) : Error(ErrorKind::kInput, m) {}
};

// A long stage stopped by SIGINT/SIGTERM; what was completed is on disk and --resume continues.
class InterruptedError : public Error {
 public:
  explicit InterruptedError(const std::string& m) : Error(ErrorKind::kInterrupted, m) {}
};

// A broken invariant (XBAR_CHECK) or an unexpected system failure.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& m) : Error(ErrorKind::kInternal, m) {}
};

// Concatenates anything that has operator<< into one string.
template <typename... Args>
std::string StrCat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

namespace detail {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

}  // namespace xbar

// Throws xbar::InternalError("file:line: internal check 'cond' failed: msg") when cond is false.
// The message parts (at least one) are only evaluated on failure.
#define XBAR_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      ::xbar::detail::CheckFailed(__FILE__, __LINE__, #cond, ::xbar::StrCat(__VA_ARGS__)); \
    }                                                                                      \
  } while (0)
