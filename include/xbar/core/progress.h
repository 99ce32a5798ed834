// xbar/core/progress.h — progress reporting for long stages.
//
// On a terminal a one-line bar is redrawn in place (at most 10 times a second) with the count,
// rate, ETA and a caller-supplied status such as "loss 0.412 acc 85.1%". When stderr is not a
// terminal (CI, a log file, a pipe) a plain line is printed every `interval_s` seconds instead, so
// logs stay readable.
//
//   Progress bar("epoch 3/15", num_batches);
//   for (...) { ...; bar.Update(i + 1, StrCat("loss ", loss)); }
//   bar.Finish("loss 0.31 acc 88.9%");
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace xbar {

// Formats seconds as "42s", "3m07s" or "1h02m".
std::string FormatDuration(double seconds);

class Progress {
 public:
  // `total` > 0 units of work. `tty` selects the redrawn bar; by default it is detected on `out`.
  Progress(std::string label, int64_t total, std::FILE* out = stderr, int tty = -1,
           double interval_s = 10.0);
  void Update(int64_t done, const std::string& status = "");
  // True when the next Update() would print: lets callers skip building an expensive status.
  bool Due() const;
  // Prints the final line (always, also when quiet).
  void Finish(const std::string& status = "");
  double elapsed_s() const;

  // When false (tests, --quiet) nothing but Finish() lines are printed.
  static void SetEnabled(bool enabled);
  // When true nothing at all is printed, Finish() lines included (MPI ranks other than 0).
  static void SetSilent(bool silent);
  // Overrides terminal detection for bars created later (-1: detect on their stream): a caller
  // that tees stderr into a log file through a pipe keeps the redrawn bar on the terminal.
  static void SetTerminal(int tty);

 private:
  void Print(int64_t done, const std::string& status, bool final_line);

  std::string label_;
  int64_t total_;
  std::FILE* out_;
  bool tty_;
  double interval_s_;
  std::chrono::steady_clock::time_point start_;
  double last_print_s_ = -1.0;
  bool finished_ = false;
};

}  // namespace xbar
