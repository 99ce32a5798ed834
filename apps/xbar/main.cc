// xbar — command-line entry point. Parses the subcommand, runs it, and maps errors to exit codes
// (docs/INTERFACE.md): 0 ok, 2 bad usage or config, 3 bad input data or model file,
// 4 interrupted (resumable), 1 anything else. Errors are one line on stderr. Under mpirun
// (xbar faults) an error every rank agreed on is printed once by rank 0; an error on one rank only
// is printed with its rank and ends the whole world.
#include <c10/util/Exception.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"
#include "xbar/core/dist.h"
#include "xbar/core/error.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"

namespace {

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

// Prints one error line and returns the exit code; in an MPI world also leaves it (see above).
int Fail(const std::string& message, int code) {
  namespace dist = xbar::dist;
  if (dist::Size() > 1) {
    if (!dist::ErrorIsShared()) {
      std::fprintf(stderr, "xbar: rank %d: %s\n", dist::Rank(), OneLine(message).c_str());
      std::fflush(stderr);
      dist::Abort(code);
    }
    if (dist::Rank() == 0) std::fprintf(stderr, "xbar: %s\n", OneLine(message).c_str());
    dist::Finalize();
    return code;
  }
  std::fprintf(stderr, "xbar: %s\n", OneLine(message).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  xbar::KeepFreedMemoryForReuse();
  CLI::App app{"xbar — train, compress, map, simulate and cost DNNs on ReRAM crossbars"};
  xbar::app::RegisterAll(app);

  xbar::InstallInterruptHandlers();
  try {
    xbar::dist::Init(&argc, &argv);
  } catch (const xbar::Error& e) {
    std::fprintf(stderr, "xbar: %s\n", OneLine(e.what()).c_str());
    return e.exit_code();
  }
  if (xbar::dist::Rank() != 0) {
    // Only rank 0 speaks (progress, summaries); the other ranks' errors still reach stderr.
    if (std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
    xbar::Progress::SetSilent(true);
  }
  if (auto warning = xbar::SlowBlasWarning(); warning && xbar::dist::Rank() == 0) std::fprintf(stderr, "xbar: %s\n", warning->c_str());
  try {
    xbar::app::CheckSubcommand(app, std::vector<std::string>(argv + 1, argv + argc));
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version
      xbar::dist::Finalize();
      return app.exit(e);
    }
    return Fail(std::string(e.what()) + " (see 'xbar --help')", 2);
  } catch (const xbar::Error& e) {
    return Fail(e.what(), e.exit_code());
  } catch (const c10::Error& e) {
    return Fail(std::string("LibTorch error: ") + e.what_without_backtrace(), 1);
  } catch (const std::exception& e) {
    return Fail(e.what(), 1);
  }
  xbar::dist::Finalize();
  return 0;
}
