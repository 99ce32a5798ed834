// The xbar subcommands. Each Register* adds its CLI11 subcommand and its callback; callbacks
// throw xbar::Error on failure and main.cc maps that to the exit code. The Run* functions are the
// stages themselves: `xbar run` (cmd_run.cc) calls them in turn with one experiment file.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace xbar::app {

struct TrainArgs {
  std::string config, out;
  std::vector<std::string> sets;
  bool resume = false;
};
struct EvalArgs {
  std::string config, weights, out;
  std::vector<std::string> sets;
};
struct CompressArgs {
  std::string config, weights, out;
  std::vector<std::string> sets;
  bool resume = false;
};
struct SimulateArgs {
  std::string config, weights, out;
  std::vector<std::string> sets;
};
struct EstimateArgs {
  std::string config, weights, out, preset;
  std::vector<std::string> sets;
};
struct FaultsArgs {
  std::string config, out;
  std::vector<std::string> weights, sets;
  bool resume = false;
};

void RunTrain(const TrainArgs& a);
void RunEval(const EvalArgs& a);
void RunCompress(const CompressArgs& a);
void RunSimulate(const SimulateArgs& a);
void RunEstimate(const EstimateArgs& a);
void RunFaults(const FaultsArgs& a);

// Every subcommand, the version flag and "exactly one subcommand" (cli.cc).
void RegisterAll(CLI::App& app);

// ConfigError "unknown command 'X'; expected one of ..." when the first argument is neither an
// option nor one of app's subcommands (CLI11 alone reports only "A subcommand is required").
void CheckSubcommand(const CLI::App& app, const std::vector<std::string>& args);
// Parses and runs one command line (without the program name) in this process: the Python module's
// entry point. Throws xbar::Error (a parse error is a ConfigError) instead of exiting.
void RunCommandLine(const std::vector<std::string>& args);

void RegisterTrain(CLI::App& app);
void RegisterEval(CLI::App& app);
void RegisterInspect(CLI::App& app);
void RegisterKeys(CLI::App& app);
void RegisterCompress(CLI::App& app);
void RegisterSimulate(CLI::App& app);
void RegisterEstimate(CLI::App& app);
void RegisterFaults(CLI::App& app);
void RegisterRun(CLI::App& app);

}  // namespace xbar::app
