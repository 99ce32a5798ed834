// The command line as a library: the executable (main.cc) and the Python module (python/) parse the
// same subcommands.
#include <c10/util/Exception.h>

#include "commands.h"
#include "xbar/core/error.h"

namespace xbar::app {

void RegisterAll(CLI::App& app) {
  app.set_version_flag("--version", "xbar " XBAR_VERSION);
  app.require_subcommand(1);
  RegisterTrain(app);
  RegisterEval(app);
  RegisterInspect(app);
  RegisterCompress(app);
  RegisterSimulate(app);
  RegisterEstimate(app);
  RegisterFaults(app);
  RegisterKeys(app);
  RegisterRun(app);
}

void RunCommandLine(const std::vector<std::string>& args) {
  CLI::App app{"xbar"};
  RegisterAll(app);
  std::vector<std::string> argv_store = {"xbar"};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_store) argv.push_back(s.data());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return;  // --help, --version
    throw ConfigError(StrCat(e.what(), " (see 'xbar --help')"));
  } catch (const c10::Error& e) {
    throw InternalError(StrCat("LibTorch error: ", e.what_without_backtrace()));
  }
}

}  // namespace xbar::app
