#include "xbar/config/config.h"

#include <gtest/gtest.h>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"

namespace xbar {
namespace {

std::string ErrorOf(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    Config::Parse(yaml, "exp.yaml", sets);
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "errors are one line: " << e.what();
    return e.what();
  }
  return "";
}

TEST(Config, EmptyFileAndMinimalFileUseDefaults) {
  Config c = Config::Parse("", "empty.yaml");
  EXPECT_EQ(c.Str("dataset.name"), "fashion-mnist");
  EXPECT_EQ(c.Str("model.name"), "lenet5");
  EXPECT_EQ(c.Int("train.epochs"), 15);
  EXPECT_DOUBLE_EQ(c.Float("train.lr"), 1e-3);
  EXPECT_EQ(c.Str("dataset.normalize"), "auto");
  Config m = Config::Parse("dataset:\n  name: fashion-mnist\nmodel:\n  name: vgg8\n", "min.yaml");
  EXPECT_EQ(m.Str("model.name"), "vgg8");
  EXPECT_TRUE(m.IsSet("model.name"));
  EXPECT_FALSE(m.IsSet("train.epochs"));
  EXPECT_EQ(m.Where("model.name"), "min.yaml:4");
  EXPECT_EQ(m.Where("train.epochs"), "default");
}

TEST(Config, TypedValues) {
  Config c = Config::Parse(
      "seed: 7\ntrain:\n  lr: 1e-2\n  nesterov: yes\n  optimizer: sgd\n  epochs: +3\n"
      "dataset:\n  validation_split: 0\n",
      "t.yaml");
  EXPECT_EQ(c.Int("seed"), 7);
  EXPECT_DOUBLE_EQ(c.Float("train.lr"), 0.01);
  EXPECT_TRUE(c.Bool("train.nesterov"));
  EXPECT_EQ(c.Str("train.optimizer"), "sgd");
  EXPECT_EQ(c.Int("train.epochs"), 3);
  EXPECT_DOUBLE_EQ(c.Float("dataset.validation_split"), 0.0);
}

TEST(Config, UnknownKeysNameFileLineAndSuggest) {
  EXPECT_EQ(ErrorOf("train:\n  epochs: 3\n  epoch: 4\n"),
            "exp.yaml:3: unknown key 'train.epoch' (did you mean 'train.epochs'?); see docs/USER_GUIDE.md for the "
            "valid keys");
  EXPECT_NE(ErrorOf("bogus_section:\n  x: 1\n").find("exp.yaml:1: unknown key 'bogus_section'"), std::string::npos);
  EXPECT_NE(ErrorOf("model:\n  nme: lenet5\n").find("did you mean 'model.name'"), std::string::npos);
}

TEST(Config, WrongTypesAndRangesNameTheExpectation) {
  EXPECT_EQ(ErrorOf("train:\n  epochs: fifteen\n"),
            "exp.yaml:2: train.epochs: expected an integer in [1, 100000], got 'fifteen'");
  EXPECT_EQ(ErrorOf("train:\n  epochs: 0\n"), "exp.yaml:2: train.epochs: expected an integer in [1, 100000], got '0'");
  EXPECT_EQ(ErrorOf("train:\n  epochs: 2.5\n"),
            "exp.yaml:2: train.epochs: expected an integer in [1, 100000], got '2.5'");
  EXPECT_EQ(ErrorOf("train:\n  lr: 0\n"), "exp.yaml:2: train.lr: expected a number in (0.0, 10.0], got '0'");
  EXPECT_EQ(ErrorOf("train:\n  momentum: 1\n"),
            "exp.yaml:2: train.momentum: expected a number in [0.0, 1.0), got '1'");
  EXPECT_EQ(ErrorOf("train:\n  nesterov: maybe\n"), "exp.yaml:2: train.nesterov: expected true or false, got 'maybe'");
  EXPECT_EQ(ErrorOf("model:\n  name: lenet\n"),
            "exp.yaml:2: model.name: expected one of lenet5, vgg8, vgg11, vgg16, resnet20, resnet18, got 'lenet'");
  EXPECT_EQ(ErrorOf("train:\n  lr: [1, 2]\n"), "exp.yaml:2: train.lr: expected a number in (0.0, 10.0], got '[1, 2]'");
  EXPECT_EQ(ErrorOf("train:\n  lr: .nan\n"), "exp.yaml:2: train.lr: expected a number in (0.0, 10.0], got '.nan'");
}

TEST(Config, StructureErrors) {
  EXPECT_EQ(ErrorOf("train: 5\n"), "exp.yaml:1: 'train' is a section; expected a mapping of keys under it");
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "exp.yaml:1: expected a mapping of sections and keys at the top level");
  EXPECT_EQ(ErrorOf("train:\n  epochs: 3\n  epochs: 4\n"), "exp.yaml:3: duplicate key 'train.epochs'");
  EXPECT_NE(ErrorOf("train:\n  epochs: [3\n").find("exp.yaml:"), std::string::npos);
  EXPECT_NE(ErrorOf("train:\n  epochs: [3\n").find("YAML syntax error"), std::string::npos);
  Config c = Config::Parse("train:\n", "t.yaml");  // an empty section is fine
  EXPECT_EQ(c.Int("train.epochs"), 15);
}

TEST(Config, SetOverridesAreValidatedLikeTheFile) {
  Config c = Config::Parse("train:\n  epochs: 3\n", "t.yaml", {"train.epochs=5", "model.name=resnet20"});
  EXPECT_EQ(c.Int("train.epochs"), 5);
  EXPECT_EQ(c.Str("model.name"), "resnet20");
  EXPECT_EQ(c.Where("train.epochs"), "--set train.epochs=5");
  EXPECT_EQ(ErrorOf("", {"train.epochs=abc"}),
            "--set train.epochs=abc: train.epochs: expected an integer in [1, 100000], got 'abc'");
  EXPECT_EQ(ErrorOf("", {"train.epoch=3"}),
            "--set train.epoch=3: unknown key 'train.epoch' (did you mean 'train.epochs'?); see docs/USER_GUIDE.md for "
            "the valid keys");
  EXPECT_EQ(ErrorOf("", {"train.epochs"}), "--set train.epochs: expected section.key=value");
  EXPECT_NE(ErrorOf("", {"train=3"}).find("unknown key 'train'"), std::string::npos);
}

TEST(Config, ResolvedYamlRoundTripsEveryValue) {
  Config c = Config::Parse(
      "name: x\ntrain:\n  lr: 0.1\n  optimizer: sgd\ndataset:\n  path: 'a: b'\nfaults:\n  schemes: [complementary, offset]\n",
      "t.yaml", {"seed=3"});
  const std::string yaml = c.ToYaml();
  Config back = Config::Parse(yaml, "resolved.yaml");
  for (const auto& spec : Schema()) {
    if (spec.key.find('*') != std::string::npos) continue;
    switch (spec.type) {
      case ValueType::kInt: EXPECT_EQ(back.Int(spec.key), c.Int(spec.key)) << spec.key; break;
      case ValueType::kFloat: EXPECT_EQ(back.Float(spec.key), c.Float(spec.key)) << spec.key; break;
      case ValueType::kBool: EXPECT_EQ(back.Bool(spec.key), c.Bool(spec.key)) << spec.key; break;
      case ValueType::kString:
      case ValueType::kEnum: EXPECT_EQ(back.Str(spec.key), c.Str(spec.key)) << spec.key; break;
      case ValueType::kFloatList: EXPECT_EQ(back.FloatList(spec.key), c.FloatList(spec.key)) << spec.key; break;
      case ValueType::kEnumList: EXPECT_EQ(back.EnumList(spec.key), c.EnumList(spec.key)) << spec.key; break;
    }
  }
  EXPECT_EQ(back.EnumList("faults.schemes"), (std::vector<std::string>{"complementary", "offset"}));
  EXPECT_TRUE(Config::Parse("", "e.yaml").EnumList("faults.schemes").empty());
  EXPECT_EQ(ErrorOf("", {"faults.schemes=[two-column, complimentary]"}),
            "--set faults.schemes=[two-column, complimentary]: faults.schemes: expected a list of names, each one of two-column, two-crossbar, offset, polarized, "
            "complementary, got '[two-column, complimentary]'");
  EXPECT_EQ(back.Str("dataset.path"), "a: b");
  EXPECT_NE(yaml.find("train:\n  epochs: 15  # default\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("seed: 3  # --set seed=3\n"), std::string::npos) << yaml;
}

TEST(Config, LoadNamesTheFileAndDefaultsTheNameToItsStem) {
  const std::string dir = ::testing::TempDir();
  WriteFileAtomic(dir + "/my-exp.yaml", "seed: 1\n");
  Config c = Config::Load(dir + "/my-exp.yaml");
  EXPECT_EQ(c.Str("name"), "my-exp");
  try {
    Config::Load(dir + "/nope.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.yaml: file not found"), std::string::npos) << e.what();
  }
}

TEST(Config, PresetFromAPathIsReadAgainWhenItChanges) {
  // Parsed presets are cached by path and content: an edited preset file takes effect on the next load.
  const std::string dir = ::testing::TempDir();
  WriteFileAtomic(dir + "/chip.yaml", "mapping:\n  adc_bits: 5\n");
  WriteFileAtomic(dir + "/exp.yaml", "arch:\n  preset: " + dir + "/chip.yaml\n");
  EXPECT_EQ(Config::Load(dir + "/exp.yaml").Int("mapping.adc_bits"), 5);
  EXPECT_EQ(Config::Load(dir + "/exp.yaml", {"mapping.adc_bits=7"}).Int("mapping.adc_bits"), 7);  // the user's value wins
  WriteFileAtomic(dir + "/chip.yaml", "mapping:\n  adc_bits: 6\n");
  EXPECT_EQ(Config::Load(dir + "/exp.yaml").Int("mapping.adc_bits"), 6);
  WriteFileAtomic(dir + "/chip.yaml", "train:\n  epochs: 3\n");
  EXPECT_THROW(Config::Load(dir + "/exp.yaml"), ConfigError);
}

TEST(Config, EveryDefaultSatisfiesItsOwnSchema) {
  // Config() parses every default through the validator; a bad default would throw here.
  EXPECT_NO_THROW(Config());
  for (const auto& spec : Schema()) {
    EXPECT_FALSE(spec.help.empty()) << spec.key << " needs a help line";
    EXPECT_EQ(FindKeySpec(spec.key), &spec);
  }
}

}  // namespace
}  // namespace xbar
