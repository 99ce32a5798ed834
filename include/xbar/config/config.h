// xbar/config/config.h — one experiment YAML, validated against the schema, with --set overrides.
//
// Every key an experiment understands is declared once in the schema (schema.cc) with its type,
// default, range and help text. Loading rejects unknown keys (with a "did you mean" hint), values of
// the wrong type and values out of range, naming the file and line:
//
//   configs/lenet5.yaml:7: train.epochs: expected an integer in [1, 100000], got 'fifteen'
//
// Overrides use the same rules: `--set train.lr=0.01` (the value is parsed as YAML, so lists work:
// `--set faults.rates=[0.001,0.01]`). Getters are typed; the resolved config (defaults + file +
// overrides) is written back as YAML into every run directory.
//
// The hardware preset `arch.preset` (configs/arch/<name>.yaml, sections mapping, device and arch)
// supplies every key of those sections that the file and --set leave unset; Where() then names the
// preset, and the resolved YAML marks each key with where its value came from.
//
//   Config cfg = Config::Load("configs/default.yaml", {"train.epochs=3"});
//   int64_t epochs = cfg.Int("train.epochs");
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xbar {

enum class ValueType { kInt, kFloat, kBool, kString, kEnum, kFloatList, kEnumList };

// One key of the schema. A '*' path segment matches any name (for per-layer overrides).
struct KeySpec {
  std::string key;            // "train.epochs"
  ValueType type;
  std::string default_value;  // YAML text of the default
  double min = -1e308;        // numeric range (for lists: of each element)
  double max = 1e308;
  bool min_exclusive = false;
  bool max_exclusive = false;
  std::vector<std::string> choices;  // kEnum, kEnumList: the valid names
  std::string help;                  // one line, with the unit
};

// The schema: every key, in the order the resolved config is written.
const std::vector<KeySpec>& Schema();
// Keys that were folded into another one (old -> new): giving one is a ConfigError naming its
// replacement.
const std::vector<std::pair<std::string, std::string>>& ReplacedKeys();
// configs/<sub>/<name>: `name` itself when it is a path or exists, else the working directory's
// configs/<sub>/, $XBAR_CONFIG_DIR/<sub>/, then the source tree's configs/<sub>/ (the last one is
// returned when none has it, for the error message).
std::string FindConfigFile(const std::string& sub, const std::string& name);
// The spec matching a concrete key ("compress.layers.conv1.sparsity" matches
// "compress.layers.*.sparsity"), or nullptr.
const KeySpec* FindKeySpec(const std::string& key);
// "an integer in [1, 100000]", "one of sgd, adam", ...
std::string DescribeExpected(const KeySpec& spec);

class Config {
 public:
  struct Value {
    ValueType type = ValueType::kString;
    int64_t i = 0;
    double f = 0.0;
    bool b = false;
    std::string s;               // kString / kEnum; also the text as given for every type
    std::vector<double> list;    // kFloatList
    std::vector<std::string> names;  // kEnumList
    std::string where;           // "file.yaml:12", "--set", "preset isaac (configs/arch/isaac.yaml:9)", or "default"
    enum class Origin { kDefault, kPreset, kUser } origin = Origin::kDefault;
  };

  // Defaults only.
  Config();
  // Reads `path` (ConfigError when unreadable or invalid) and applies "key=value" overrides.
  static Config Load(const std::string& path, const std::vector<std::string>& overrides = {});
  // Same from text; `source` names it in messages.
  static Config Parse(const std::string& yaml_text, const std::string& source,
                      const std::vector<std::string>& overrides = {});

  int64_t Int(const std::string& key) const;
  double Float(const std::string& key) const;
  bool Bool(const std::string& key) const;
  const std::string& Str(const std::string& key) const;  // kString and kEnum
  const std::vector<double>& FloatList(const std::string& key) const;
  const std::vector<std::string>& EnumList(const std::string& key) const;

  // True when the key was given in the file or by --set (not defaulted, not from the preset).
  bool IsSet(const std::string& key) const;
  // True when the hardware preset supplied the value.
  bool FromPreset(const std::string& key) const;
  // "file.yaml:12" / "--set" / "default": where the value came from, for error messages.
  std::string Where(const std::string& key) const;
  // The value as canonical text (what ToYaml writes), for fingerprints and messages.
  std::string Text(const std::string& key) const;
  // Concrete keys present under a prefix, e.g. all "compress.layers.<name>.<key>" entries.
  std::vector<std::string> KeysWithPrefix(const std::string& prefix) const;

  // Replaces a value (validated like --set). Used to record resolved automatic values
  // (threads = 0 -> the actual count) so the written config reproduces the run.
  void Set(const std::string& key, const std::string& yaml_value, const std::string& where);

  // The resolved config as YAML, nested by section, every key present.
  std::string ToYaml() const;
  const std::string& source() const { return source_; }

 private:
  const Value& Get(const std::string& key, ValueType type) const;
  void ApplyOverride(const std::string& assignment);
  static Config ParseOnly(const std::string& yaml_text, const std::string& source,
                          const std::vector<std::string>& overrides);
  // Fills the mapping, device and arch keys the user left unset from arch.preset.
  void ApplyPreset();

  std::string source_ = "<defaults>";
  std::map<std::string, Value> values_;
};

}  // namespace xbar
