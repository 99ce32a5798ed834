#include "xbar/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <cstdlib>
#include <sstream>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"

#ifndef XBAR_CONFIG_DIR
#define XBAR_CONFIG_DIR "configs"
#endif

namespace xbar {
namespace {

std::vector<std::string> SplitKey(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  return parts;
}

// A '*' segment of a pattern matches one or more key segments (layer names contain dots:
// "compress.layers.features.0.sparsity" matches "compress.layers.*.sparsity").
bool KeyMatches(const std::vector<std::string>& pattern, const std::vector<std::string>& key) {
  const auto star = std::find(pattern.begin(), pattern.end(), "*");
  if (star == pattern.end()) return pattern == key;
  const auto before = static_cast<size_t>(star - pattern.begin());
  const size_t after = pattern.size() - before - 1;
  if (key.size() < before + 1 + after) return false;
  return std::equal(pattern.begin(), star, key.begin()) && std::equal(star + 1, pattern.end(), key.end() - static_cast<std::ptrdiff_t>(after));
}

// True when `prefix` names a section: the beginning of some schema key.
bool IsSection(const std::string& prefix) {
  auto p = SplitKey(prefix);
  for (const auto& spec : Schema()) {
    auto s = SplitKey(spec.key);
    const auto star = std::find(s.begin(), s.end(), "*");
    const auto fixed = static_cast<size_t>(star - s.begin());  // segments before any '*'
    if (star == s.end()) {
      if (p.size() < s.size() && std::equal(p.begin(), p.end(), s.begin())) return true;
    } else if (p.size() <= fixed ? std::equal(p.begin(), p.end(), s.begin())
                                 : std::equal(s.begin(), star, p.begin())) {
      return true;  // the '*' absorbs whatever follows
    }
  }
  return false;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string UnknownKeyMessage(const std::string& where, const std::string& key) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& spec : Schema()) {
    size_t d = EditDistance(key, spec.key);
    if (d < best_d) {
      best_d = d;
      best = spec.key;
    }
  }
  std::string hint = best_d <= std::max<size_t>(2, key.size() / 4) ? StrCat(" (did you mean '", best, "'?)") : "";
  return StrCat(where, ": unknown key '", key, "'", hint, "; see docs/USER_GUIDE.md for the valid keys");
}

std::string FormatNumber(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep floats visibly floats
  return s;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool ParseInt(const std::string& text, int64_t* out) {
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  auto res = std::from_chars(b, e, *out);
  return res.ec == std::errc() && res.ptr == e && b != e;
}

bool ParseFloat(const std::string& text, double* out) {
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  auto res = std::from_chars(b, e, *out);
  return res.ec == std::errc() && res.ptr == e && b != e && std::isfinite(*out);
}

bool InRange(const KeySpec& spec, double v) {
  if (spec.min_exclusive ? !(v > spec.min) : !(v >= spec.min)) return false;
  if (spec.max_exclusive ? !(v < spec.max) : !(v <= spec.max)) return false;
  return true;
}

std::string NodeText(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter em;
  em << YAML::Flow << node;
  return em.c_str();
}

Config::Value ParseValue(const KeySpec& spec, const YAML::Node& node, const std::string& key,
                         const std::string& where) {
  Config::Value v;
  v.type = spec.type;
  v.where = where;
  v.s = NodeText(node);
  auto fail = [&]() {
    return ConfigError(StrCat(where, ": ", key, ": expected ", DescribeExpected(spec), ", got '", v.s, "'"));
  };
  if (spec.type == ValueType::kFloatList || spec.type == ValueType::kEnumList) {
    // A YAML sequence, or one scalar for a one-element list ('' is an empty list of names).
    std::vector<YAML::Node> items;
    if (node.IsSequence()) {
      for (const auto& item : node) items.push_back(item);
    } else if (node.IsScalar()) {
      if (spec.type == ValueType::kFloatList || !node.Scalar().empty()) items.push_back(node);
    } else {
      throw fail();
    }
    for (const auto& item : items) {
      if (!item.IsScalar()) throw fail();
      if (spec.type == ValueType::kEnumList) {
        if (std::find(spec.choices.begin(), spec.choices.end(), item.Scalar()) == spec.choices.end()) throw fail();
        v.names.push_back(item.Scalar());
      } else {
        double x = 0;
        if (!ParseFloat(item.Scalar(), &x) || !InRange(spec, x)) throw fail();
        v.list.push_back(x);
      }
    }
    return v;
  }
  if (!node.IsScalar()) throw fail();
  const std::string& text = node.Scalar();
  switch (spec.type) {
    case ValueType::kInt: {
      if (!ParseInt(text, &v.i) || !InRange(spec, static_cast<double>(v.i))) throw fail();
      break;
    }
    case ValueType::kFloat: {
      if (!ParseFloat(text, &v.f) || !InRange(spec, v.f)) throw fail();
      break;
    }
    case ValueType::kBool: {
      std::string t = Lower(text);
      if (t == "true" || t == "yes" || t == "on") {
        v.b = true;
      } else if (t == "false" || t == "no" || t == "off") {
        v.b = false;
      } else {
        throw fail();
      }
      break;
    }
    case ValueType::kEnum:
      if (std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) throw fail();
      v.s = text;
      break;
    case ValueType::kString:
      v.s = text;
      break;
    case ValueType::kFloatList:
    case ValueType::kEnumList:
      break;
  }
  return v;
}

void CheckReplaced(const std::string& key, const std::string& where) {
  for (const auto& [old_key, new_key] : ReplacedKeys()) {
    if (key == old_key) {
      throw ConfigError(StrCat(where, ": ", key, ": replaced by ", new_key, " (one key per quantity: the hardware "
                               "description is shared by simulate, compress and estimate)"));
    }
  }
}

std::string MarkOf(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return source;
  return StrCat(source, ":", m.line + 1);
}

}  // namespace

const KeySpec* FindKeySpec(const std::string& key) {
  // The schema split once: exact keys by name, patterns (with '*') in schema order after them.
  struct Index {
    std::map<std::string, const KeySpec*> exact;
    std::vector<std::pair<std::vector<std::string>, const KeySpec*>> patterns;
  };
  static const Index index = [] {
    Index ix;
    for (const auto& spec : Schema()) {
      if (spec.key.find('*') == std::string::npos) {
        ix.exact.emplace(spec.key, &spec);
      } else {
        ix.patterns.emplace_back(SplitKey(spec.key), &spec);
      }
    }
    return ix;
  }();
  if (auto it = index.exact.find(key); it != index.exact.end()) return it->second;
  const auto k = SplitKey(key);
  for (const auto& [pattern, spec] : index.patterns) {
    if (KeyMatches(pattern, k)) return spec;
  }
  return nullptr;
}

std::string DescribeExpected(const KeySpec& spec) {
  auto range = [&]() -> std::string {
    bool lo = spec.min > -1e300, hi = spec.max < 1e300;
    auto num = [&](double x) {
      return spec.type == ValueType::kInt ? StrCat(static_cast<long long>(x)) : FormatNumber(x);
    };
    if (lo && hi) {
      return StrCat(" in ", spec.min_exclusive ? "(" : "[", num(spec.min), ", ", num(spec.max),
                    spec.max_exclusive ? ")" : "]");
    }
    if (lo) return StrCat(spec.min_exclusive ? " > " : " >= ", num(spec.min));
    if (hi) return StrCat(spec.max_exclusive ? " < " : " <= ", num(spec.max));
    return "";
  };
  switch (spec.type) {
    case ValueType::kInt:
      return "an integer" + range();
    case ValueType::kFloat:
      return "a number" + range();
    case ValueType::kBool:
      return "true or false";
    case ValueType::kString:
      return "a string";
    case ValueType::kEnum: {
      std::string s = "one of ";
      for (size_t i = 0; i < spec.choices.size(); ++i) s += (i ? ", " : "") + spec.choices[i];
      return s;
    }
    case ValueType::kFloatList:
      return "a list of numbers" + range();
    case ValueType::kEnumList: {
      std::string s = "a list of names, each one of ";
      for (size_t i = 0; i < spec.choices.size(); ++i) s += (i ? ", " : "") + spec.choices[i];
      return s;
    }
  }
  return "?";
}

Config::Config() {
  // Every default parsed once per process (a YAML parse per key made each Config cost ~1 ms).
  static const std::map<std::string, Value> defaults = [] {
    std::map<std::string, Value> d;
    for (const auto& spec : Schema()) {
      if (spec.key.find('*') != std::string::npos) continue;  // pattern keys have no default entry
      d[spec.key] = ParseValue(spec, YAML::Load(spec.default_value.empty() ? "''" : spec.default_value), spec.key,
                               "default");
    }
    return d;
  }();
  values_ = defaults;
}

Config Config::Load(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  try {
    text = ReadFile(path);
  } catch (const InputError& e) {
    throw ConfigError(e.what());  // an unreadable config is a usage error (exit 2)
  }
  Config cfg = Parse(text, path, overrides);
  if (!cfg.IsSet("name")) cfg.values_["name"].s = FileStem(path);
  return cfg;
}

Config Config::Parse(const std::string& yaml_text, const std::string& source,
                     const std::vector<std::string>& overrides) {
  Config cfg = ParseOnly(yaml_text, source, overrides);
  cfg.ApplyPreset();
  return cfg;
}

std::string FindConfigFile(const std::string& sub, const std::string& name) {
  if (name.find('/') != std::string::npos || FileExists(name)) return name;
  std::vector<std::string> dirs = {JoinPath("configs", sub)};
  if (const char* env = std::getenv("XBAR_CONFIG_DIR")) dirs.push_back(JoinPath(env, sub));
  dirs.push_back(JoinPath(XBAR_CONFIG_DIR, sub));
  for (const std::string& d : dirs) {
    if (FileExists(JoinPath(d, name))) return JoinPath(d, name);
  }
  return JoinPath(dirs.back(), name);
}

void Config::ApplyPreset() {
  const std::string& preset = Str("arch.preset");
  const bool is_path = preset.find('/') != std::string::npos ||
                       (preset.size() > 5 && preset.compare(preset.size() - 5, 5, ".yaml") == 0);
  const std::string path = FindConfigFile("arch", is_path ? preset : preset + ".yaml");
  if (!FileExists(path) || IsDirectory(path)) {
    std::string names;
    for (const char* n : {"generic", "isaac", "forms", "islped19"}) names += (names.empty() ? "" : ", ") + std::string(n);
    throw ConfigError(StrCat(Where("arch.preset"), ": arch.preset: no preset '", preset, "' (", path,
                             "); expected one of ", names, " or a path to a preset YAML"));
  }
  const std::string name = is_path ? FileStem(path) : preset;
  // Parsed once per process for each path and content (a campaign or a fuzzer loads configs by
  // the thousand); a map never moves its nodes, so the reference outlives the lock.
  static std::mutex mu;
  static std::map<std::pair<std::string, std::string>, Config> parsed;
  std::pair<std::string, std::string> key_of{path, ReadFile(path)};
  const Config* found = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = parsed.find(key_of); it != parsed.end()) found = &it->second;
  }
  std::optional<Config> uncached;
  if (found == nullptr) {
    Config p = ParseOnly(key_of.second, path, {});
    std::lock_guard<std::mutex> lock(mu);
    if (parsed.size() < 64) {
      found = &parsed.try_emplace(std::move(key_of), std::move(p)).first->second;
    } else {
      found = &uncached.emplace(std::move(p));
    }
  }
  const Config& p = *found;
  for (const auto& [key, v] : p.values_) {
    if (v.origin != Value::Origin::kUser) continue;
    const bool hardware = key.compare(0, 8, "mapping.") == 0 || key.compare(0, 7, "device.") == 0 ||
                          (key.compare(0, 5, "arch.") == 0 && key != "arch.preset");
    if (!hardware) {
      throw ConfigError(StrCat(v.where, ": ", key, ": a preset sets only mapping.*, device.* and arch.* keys "
                               "(not arch.preset)"));
    }
    if (IsSet(key)) continue;  // the user's value wins
    Value copy = v;
    copy.where = StrCat("preset ", name, " (", v.where, ")");
    copy.origin = Value::Origin::kPreset;
    values_[key] = std::move(copy);
  }
}

Config Config::ParseOnly(const std::string& yaml_text, const std::string& source,
                         const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.source_ = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(StrCat(source, ":", e.mark.line + 1, ": YAML syntax error: ", e.msg));
  }
  if (root.IsNull()) {
    // An empty file: every key keeps its default.
  } else if (!root.IsMap()) {
    throw ConfigError(StrCat(MarkOf(source, root), ": expected a mapping of sections and keys at the top level"));
  } else {
    std::function<void(const YAML::Node&, const std::string&)> walk = [&](const YAML::Node& map,
                                                                          const std::string& prefix) {
      std::vector<std::string> seen;
      for (auto it = map.begin(); it != map.end(); ++it) {
        const std::string name = it->first.IsScalar() ? it->first.Scalar() : NodeText(it->first);
        const std::string key = prefix.empty() ? name : prefix + "." + name;
        const std::string where = MarkOf(source, it->first);
        if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
          throw ConfigError(StrCat(where, ": duplicate key '", key, "'"));
        }
        seen.push_back(name);
        CheckReplaced(key, where);
        if (const KeySpec* spec = FindKeySpec(key)) {
          Value v = ParseValue(*spec, it->second, key, where);
          v.origin = Value::Origin::kUser;
          cfg.values_[key] = std::move(v);
        } else if (IsSection(key)) {
          if (it->second.IsNull()) continue;  // "train:" with nothing under it
          if (!it->second.IsMap()) {
            throw ConfigError(StrCat(where, ": '", key, "' is a section; expected a mapping of keys under it"));
          }
          walk(it->second, key);
        } else {
          throw ConfigError(UnknownKeyMessage(where, key));
        }
      }
    };
    walk(root, "");
  }
  for (const auto& o : overrides) cfg.ApplyOverride(o);
  return cfg;
}

void Config::ApplyOverride(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(StrCat("--set ", assignment, ": expected section.key=value"));
  }
  Set(assignment.substr(0, eq), assignment.substr(eq + 1), StrCat("--set ", assignment));
}

void Config::Set(const std::string& key, const std::string& yaml_value, const std::string& where) {
  CheckReplaced(key, where);
  const KeySpec* spec = FindKeySpec(key);
  if (spec == nullptr) throw ConfigError(UnknownKeyMessage(where, key));
  YAML::Node node;
  try {
    node = YAML::Load(yaml_value.empty() ? "''" : yaml_value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(StrCat(where, ": ", key, ": value is not valid YAML: ", e.msg));
  }
  values_[key] = ParseValue(*spec, node, key, where);
  values_[key].origin = Value::Origin::kUser;
}

const Config::Value& Config::Get(const std::string& key, ValueType type) const {
  auto it = values_.find(key);
  XBAR_CHECK(it != values_.end(), "config key '", key, "' is not in the schema or has no value");
  XBAR_CHECK(it->second.type == type, "config key '", key, "' read with the wrong type");
  return it->second;
}

int64_t Config::Int(const std::string& key) const { return Get(key, ValueType::kInt).i; }
double Config::Float(const std::string& key) const { return Get(key, ValueType::kFloat).f; }
bool Config::Bool(const std::string& key) const { return Get(key, ValueType::kBool).b; }
const std::vector<double>& Config::FloatList(const std::string& key) const {
  return Get(key, ValueType::kFloatList).list;
}

const std::vector<std::string>& Config::EnumList(const std::string& key) const {
  return Get(key, ValueType::kEnumList).names;
}
const std::string& Config::Str(const std::string& key) const {
  auto it = values_.find(key);
  XBAR_CHECK(it != values_.end(), "config key '", key, "' is not in the schema");
  XBAR_CHECK(it->second.type == ValueType::kString || it->second.type == ValueType::kEnum, "config key '", key,
             "' is not a string");
  return it->second.s;
}

bool Config::IsSet(const std::string& key) const {
  auto it = values_.find(key);
  return it != values_.end() && it->second.origin == Value::Origin::kUser;
}

bool Config::FromPreset(const std::string& key) const {
  auto it = values_.find(key);
  return it != values_.end() && it->second.origin == Value::Origin::kPreset;
}

std::string Config::Where(const std::string& key) const {
  auto it = values_.find(key);
  return it == values_.end() ? source_ : it->second.where;
}

std::string Config::Text(const std::string& key) const {
  auto it = values_.find(key);
  XBAR_CHECK(it != values_.end(), "config key '", key, "' has no value");
  const Value& v = it->second;
  switch (v.type) {
    case ValueType::kInt: return std::to_string(v.i);
    case ValueType::kFloat: return FormatNumber(v.f);
    case ValueType::kBool: return v.b ? "true" : "false";
    case ValueType::kFloatList: {
      std::string s = "[";
      for (size_t i = 0; i < v.list.size(); ++i) s += (i ? ", " : "") + FormatNumber(v.list[i]);
      return s + "]";
    }
    case ValueType::kEnumList: {
      std::string s = "[";
      for (size_t i = 0; i < v.names.size(); ++i) s += (i ? ", " : "") + v.names[i];
      return s + "]";
    }
    default: return v.s;
  }
}

std::vector<std::string> Config::KeysWithPrefix(const std::string& prefix) const {
  std::vector<std::string> keys;
  for (const auto& [k, v] : values_) {
    if (k.compare(0, prefix.size(), prefix) == 0) keys.push_back(k);
  }
  return keys;
}

std::string Config::ToYaml() const {
  // Keys in schema order, then concrete per-layer keys; nested by their dotted path.
  std::vector<std::string> order;
  for (const auto& spec : Schema()) {
    if (spec.key.find('*') == std::string::npos) {
      order.push_back(spec.key);
    } else {
      for (const auto& [k, v] : values_) {
        if (FindKeySpec(k) == &spec) order.push_back(k);
      }
    }
  }
  YAML::Emitter em;
  em << YAML::BeginMap;
  std::vector<std::string> open;  // currently open section path
  for (const auto& key : order) {
    auto parts = SplitKey(key);
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common]) ++common;
    while (open.size() > common) {
      em << YAML::EndMap;
      open.pop_back();
    }
    for (size_t i = common; i + 1 < parts.size(); ++i) {
      em << YAML::Key << parts[i] << YAML::Value << YAML::BeginMap;
      open.push_back(parts[i]);
    }
    const Value& v = values_.at(key);
    em << YAML::Key << parts.back() << YAML::Value;
    switch (v.type) {
      case ValueType::kInt:
      case ValueType::kFloat:
      case ValueType::kBool:
        em << Text(key);
        break;
      case ValueType::kString:
      case ValueType::kEnum:
        em << YAML::DoubleQuoted << v.s;
        break;
      case ValueType::kFloatList:
        em << YAML::Flow << YAML::BeginSeq;
        for (double x : v.list) em << FormatNumber(x);
        em << YAML::EndSeq;
        break;
      case ValueType::kEnumList:
        em << YAML::Flow << YAML::BeginSeq;
        for (const std::string& x : v.names) em << x;
        em << YAML::EndSeq;
        break;
    }
    // Where the value came from: the user (file:line or --set), the hardware preset, or the default.
    em << YAML::Comment(v.origin == Value::Origin::kDefault ? std::string("default") : v.where);
  }
  while (!open.empty()) {
    em << YAML::EndMap;
    open.pop_back();
  }
  em << YAML::EndMap;
  return std::string(em.c_str()) + "\n";
}

}  // namespace xbar
