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

void CheckSubcommand(const CLI::App& app, const std::vector<std::string>& args) {
  if (args.empty() || args[0].empty() || args[0][0] == '-') return;
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == args[0]) return;
    names += StrCat(names.empty() ? "" : ", ", sub->get_name());
  }
  throw ConfigError(StrCat("unknown command '", args[0], "'; expected one of ", names, " (see 'xbar --help')"));
}

void RunCommandLine(const std::vector<std::string>& args) {
  CLI::App app{"xbar"};
  RegisterAll(app);
  CheckSubcommand(app, args);
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
