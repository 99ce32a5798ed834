#include "xbar/core/progress.h"

#include <unistd.h>

#include <atomic>
#include <cmath>

#include "xbar/core/error.h"

namespace xbar {
namespace {
std::atomic<bool> g_enabled{true};
std::atomic<bool> g_silent{false};
std::atomic<int> g_terminal{-1};  // SetTerminal: -1 = detect
constexpr int kBarWidth = 24;
constexpr double kTtyRedrawS = 0.1;
}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>((s / 60) % 60));
  }
  return buf;
}

void Progress::SetEnabled(bool enabled) { g_enabled = enabled; }
void Progress::SetSilent(bool silent) { g_silent = silent; }
void Progress::SetTerminal(int tty) { g_terminal = tty; }

Progress::Progress(std::string label, int64_t total, std::FILE* out, int tty, double interval_s)
    : label_(std::move(label)),
      total_(total > 0 ? total : 1),
      out_(out),
      tty_(tty >= 0 ? tty != 0 : g_terminal >= 0 ? g_terminal != 0 : ::isatty(::fileno(out)) != 0),
      interval_s_(interval_s),
      start_(std::chrono::steady_clock::now()) {}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

bool Progress::Due() const {
  if (!g_enabled || finished_) return false;
  const double now = elapsed_s();
  const double gap = tty_ ? kTtyRedrawS : interval_s_;
  return last_print_s_ >= 0 ? now - last_print_s_ >= gap : (tty_ || now >= gap);
}

void Progress::Update(int64_t done, const std::string& status) {
  if (!Due()) return;
  last_print_s_ = elapsed_s();
  Print(done, status, false);
}

void Progress::Finish(const std::string& status) {
  if (finished_) return;
  finished_ = true;
  Print(total_, status, true);
}

void Progress::Print(int64_t done, const std::string& status, bool final_line) {
  if (g_silent) return;
  const double t = elapsed_s();
  const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
  const double eta = frac > 0 ? t * (1.0 - frac) / frac : NAN;
  std::string timing = final_line ? FormatDuration(t) : StrCat(FormatDuration(t), " ETA ", FormatDuration(eta));
  if (tty_ && g_enabled) {
    const int filled = static_cast<int>(std::lround(frac * kBarWidth));
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kBarWidth - filled), '.');
    std::fprintf(out_, "\r\033[K%s [%s] %lld/%lld %s %s%s", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), timing.c_str(),
                 status.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(out_, "%s %lld/%lld %s %s\n", label_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), timing.c_str(), status.c_str());
  }
  std::fflush(out_);
}

}  // namespace xbar
