// xbar keys: prints every config key with its type, default and meaning (Markdown table), the
// table docs/USER_GUIDE.md embeds; a test keeps the two identical.
#include <cstdio>

#include "commands.h"
#include "xbar/config/config.h"

namespace xbar::app {

std::string KeysMarkdown() {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& spec : Schema()) {
    std::string def = spec.default_value.empty() ? "\"\"" : spec.default_value;
    out += "| `" + spec.key + "` | " + DescribeExpected(spec) + " | `" + def + "` | " + spec.help + " |\n";
  }
  return out;
}

void RegisterKeys(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("keys", "list every config key with its type, default and meaning");
  cmd->callback([]() { std::fputs(KeysMarkdown().c_str(), stdout); });
}

}  // namespace xbar::app
