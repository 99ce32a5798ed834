// xbar — command-line entry point. Parses the subcommand, runs it, and maps errors to exit codes
// (docs/INTERFACE.md): 0 ok, 2 bad usage or config, 3 bad input data or model file,
// 4 interrupted (resumable), 1 anything else. Errors are one line on stderr.
#include <c10/util/Exception.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "xbar/core/error.h"
#include "xbar/core/platform.h"

namespace {

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xbar — train, compress, map, simulate and cost DNNs on ReRAM crossbars"};
  app.set_version_flag("--version", "xbar " XBAR_VERSION);
  app.require_subcommand(1);
  xbar::app::RegisterTrain(app);
  xbar::app::RegisterEval(app);
  xbar::app::RegisterInspect(app);
  xbar::app::RegisterCompress(app);
  xbar::app::RegisterSimulate(app);
  xbar::app::RegisterEstimate(app);
  xbar::app::RegisterFaults(app);
  xbar::app::RegisterKeys(app);

  xbar::InstallInterruptHandlers();
  if (auto warning = xbar::SlowBlasWarning()) std::fprintf(stderr, "xbar: %s\n", warning->c_str());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "xbar: %s (see 'xbar --help')\n", OneLine(e.what()).c_str());
    return 2;
  } catch (const xbar::Error& e) {
    std::fprintf(stderr, "xbar: %s\n", OneLine(e.what()).c_str());
    return e.exit_code();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "xbar: LibTorch error: %s\n", OneLine(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xbar: %s\n", OneLine(e.what()).c_str());
    return 1;
  }
  return 0;
}
