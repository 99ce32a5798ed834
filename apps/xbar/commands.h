// The xbar subcommands. Each Register* adds its CLI11 subcommand and its callback; callbacks
// throw xbar::Error on failure and main.cc maps that to the exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace xbar::app {

void RegisterTrain(CLI::App& app);
void RegisterEval(CLI::App& app);
void RegisterInspect(CLI::App& app);
void RegisterKeys(CLI::App& app);
void RegisterCompress(CLI::App& app);
void RegisterSimulate(CLI::App& app);
void RegisterEstimate(CLI::App& app);
void RegisterFaults(CLI::App& app);

}  // namespace xbar::app
