// ONNX import on graphs built here with the protobuf API (the Python suite covers real exports):
// ops, names, channel spaces through residual adds and concats, export round trip, and errors.
#include "xbar/models/onnx.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/models/state_dict.h"

namespace xbar {
namespace {

class GraphBuilder {
 public:
  GraphBuilder() {
    m_.set_ir_version(8);
    m_.add_opset_import()->set_version(13);
    g_ = m_.mutable_graph();
    g_->set_name("test");
  }
  void Input(const std::string& name, std::vector<int64_t> dims) { Value(g_->add_input(), name, dims); }
  void Output(const std::string& name) { g_->add_output()->set_name(name); }
  void Init(const std::string& name, const torch::Tensor& t) {
    auto* p = g_->add_initializer();
    p->set_name(name);
    const torch::Tensor c = t.contiguous();
    for (int64_t d : c.sizes()) p->add_dims(d);
    if (c.scalar_type() == torch::kInt64) {
      p->set_data_type(onnx::TensorProto::INT64);
      for (int64_t i = 0; i < c.numel(); ++i) p->add_int64_data(c.data_ptr<int64_t>()[i]);
    } else {
      p->set_data_type(onnx::TensorProto::FLOAT);
      p->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()), c.numel() * sizeof(float)));
    }
  }
  // An initializer that claims a shape but holds no data.
  void InitShapeOnly(const std::string& name, std::vector<int64_t> dims) {
    auto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) p->add_dims(d);
  }
  onnx::NodeProto* Node(const std::string& op, const std::string& name, std::vector<std::string> in,
                        std::vector<std::string> out) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& i : in) n->add_input(i);
    for (auto& o : out) n->add_output(o);
    return n;
  }
  static void Ints(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Float(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void Str(onnx::NodeProto* n, const std::string& name, const std::string& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }
  static void Int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  std::string Save(const std::string& file) {
    const std::string path = JoinPath(::testing::TempDir(), file);
    std::string bytes;
    m_.SerializeToString(&bytes);
    WriteFileAtomic(path, bytes);
    return path;
  }

 private:
  static void Value(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      auto* dim = tt->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("N");
      } else {
        dim->set_dim_value(d);
      }
    }
  }
  onnx::ModelProto m_;
  onnx::GraphProto* g_;
};

// Loading `path` fails with an InputError whose message contains `text`.
void ExpectLoadError(const std::string& path, const std::string& text) {
  try {
    LoadOnnxModel(path);
    ADD_FAILURE() << "expected an InputError for " << path;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// x -> stem conv -> relu -> [block: conv a -> relu -> conv b] + skip -> relu -> concat(with a 1x1 branch
// -> relu) -> global pool -> flatten -> fc
std::string ResidualGraph(GraphBuilder& b) {
  torch::manual_seed(3);
  b.Input("x", {-1, 2, 6, 6});
  b.Init("stem.weight", torch::randn({4, 2, 3, 3}));
  b.Init("stem.bias", torch::randn({4}));
  b.Init("block.a.weight", torch::randn({4, 4, 3, 3}));
  b.Init("onnx::Conv_9", torch::randn({4, 4, 3, 3}));  // a folded weight: named by its node's scope
  b.Init("side.weight", torch::randn({3, 4, 1, 1}));
  b.Init("fc.weight", torch::randn({5, 7}));
  b.Init("fc.bias", torch::randn({5}));
  auto* n = b.Node("Conv", "/stem/Conv", {"x", "stem.weight", "stem.bias"}, {"s"});
  GraphBuilder::Ints(n, "pads", {1, 1, 1, 1});
  b.Node("Relu", "/relu0", {"s"}, {"s1"});
  n = b.Node("Conv", "/block/a/Conv", {"s1", "block.a.weight"}, {"a"});
  GraphBuilder::Ints(n, "pads", {1, 1, 1, 1});
  b.Node("Relu", "/relu1", {"a"}, {"a1"});
  n = b.Node("Conv", "/block/block.b/Conv", {"a1", "onnx::Conv_9"}, {"bb"});
  GraphBuilder::Ints(n, "pads", {1, 1, 1, 1});
  b.Node("Add", "/add", {"bb", "s1"}, {"r"});
  b.Node("Relu", "/relu2", {"r"}, {"r1"});
  b.Node("Conv", "/side/Conv", {"r1", "side.weight"}, {"c"});
  b.Node("Relu", "/relu3", {"c"}, {"c1"});
  n = b.Node("Concat", "/cat", {"r1", "c1"}, {"cat"});
  GraphBuilder::Int(n, "axis", 1);
  b.Node("GlobalAveragePool", "/gap", {"cat"}, {"g"});
  b.Node("Flatten", "/flat", {"g"}, {"f"});
  n = b.Node("Gemm", "/fc/Gemm", {"f", "fc.weight", "fc.bias"}, {"y"});
  GraphBuilder::Int(n, "transB", 1);
  b.Output("y");
  return b.Save("residual.onnx");
}

TEST(Onnx, ResidualGraphRunsWithNamesAndChannelSpaces) {
  GraphBuilder b;
  const std::string path = ResidualGraph(b);
  auto m = LoadOnnxModel(path);
  std::vector<std::string> names;
  for (const auto& l : m->layers()) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"stem", "block.a", "block.b", "side", "fc"}));
  const OnnxInfo& info = OnnxModelInfo(*m);
  EXPECT_EQ(info.channels, 2);
  EXPECT_EQ(info.num_classes, 5);

  // The same computation written out in LibTorch.
  torch::NoGradGuard ng;
  const torch::Tensor x = torch::randn({3, 2, 6, 6});
  auto W = [&](const std::string& n) { return m->named_parameters()[n]; };
  torch::Tensor s1 = torch::relu(torch::conv2d(x, W("stem.weight"), W("stem.bias"), 1, 1));
  torch::Tensor a1 = torch::relu(torch::conv2d(s1, W("block.a.weight"), {}, 1, 1));
  torch::Tensor r1 = torch::relu(torch::conv2d(a1, W("block.b.weight"), {}, 1, 1) + s1);
  torch::Tensor c1 = torch::relu(torch::conv2d(r1, W("side.weight")));
  torch::Tensor f = torch::cat({r1, c1}, 1).mean({2, 3});
  torch::Tensor want = torch::addmm(W("fc.bias"), f, W("fc.weight").t());
  EXPECT_TRUE(torch::allclose(m->forward(x), want, 1e-5, 1e-5));

  // stem and the residual stream are one space (writers stem, block.b); block.a's output another;
  // side's output and the concat space, which stream and side pass into at offsets 0 and 4.
  const auto spaces = m->ChannelSpaces();
  ASSERT_EQ(spaces.size(), 4u);
  EXPECT_EQ(spaces[0].channels, 4);
  ASSERT_EQ(spaces[0].writers.size(), 2u);
  EXPECT_EQ(spaces[0].writers[0].layer, "stem");
  EXPECT_EQ(spaces[0].writers[1].layer, "block.b");
  ASSERT_EQ(spaces[0].readers.size(), 2u);
  EXPECT_EQ(spaces[0].readers[0].layer, "block.a");
  EXPECT_EQ(spaces[0].readers[0].rows_per_channel, 9);
  EXPECT_EQ(spaces[0].readers[1].layer, "side");
  EXPECT_EQ(spaces[1].writers[0].layer, "block.a");
  EXPECT_EQ(spaces[1].readers[0].layer, "block.b");
  EXPECT_EQ(spaces[2].writers[0].layer, "side");
  EXPECT_EQ(spaces[3].channels, 7);
  ASSERT_EQ(spaces[0].passes.size(), 1u);
  EXPECT_EQ(spaces[0].passes[0].to, 3);
  EXPECT_EQ(spaces[0].passes[0].offset, 0);
  EXPECT_EQ(spaces[2].passes[0].offset, 4);
  ASSERT_EQ(spaces[3].readers.size(), 1u);
  EXPECT_EQ(spaces[3].readers[0].layer, "fc");
  EXPECT_EQ(spaces[3].readers[0].rows_per_channel, 1);
}

TEST(Onnx, ExportRoundTripKeepsNewWeightsAndMetadata) {
  GraphBuilder b;
  const std::string path = ResidualGraph(b);
  auto m = LoadOnnxModel(path);
  {
    torch::NoGradGuard ng;
    m->named_parameters()["block.b.weight"].mul_(0.5);
    m->named_parameters()["fc.weight"].zero_();
  }
  const std::string out = JoinPath(::testing::TempDir(), "roundtrip.onnx");
  SaveOnnx(*m, out, {{"dataset", "fashion-mnist"}});
  auto back = LoadOnnxModel(out);
  EXPECT_EQ(OnnxModelInfo(*back).metadata.at("dataset"), "fashion-mnist");
  EXPECT_EQ(OnnxModelInfo(*back).graph_hash.size(), 16u);
  const torch::Tensor x = torch::randn({2, 2, 6, 6});
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(back->forward(x), m->forward(x)));
  for (const auto& [name, t] : StateDict(*m)) EXPECT_TRUE(torch::equal(t, back->named_parameters()[name])) << name;
}

// The activations and element-wise ops of exported CNNs, each against its ONNX definition written
// out here in double precision (not the LibTorch call the importer makes): x -> Flatten -> [Abs ->]
// op -> output, on values that straddle zero (and the Hard* ops' kinks).
TEST(Onnx, ElementwiseOpsFollowTheOnnxDefinitions) {
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({3, 1, 2, 4}) * 3.0;
  const double k = std::sqrt(2.0 / M_PI);
  struct Case {
    std::string op;
    bool positive;  // Abs before the op (Sqrt, Log, Reciprocal)
    std::function<void(GraphBuilder&, onnx::NodeProto*)> setup;
    std::function<double(double, int64_t)> want;  // (value, feature index)
  };
  const std::vector<float> slope = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f, 1.5f, 0.25f, 2.0f};
  auto none = [](GraphBuilder&, onnx::NodeProto*) {};
  const std::vector<Case> cases = {
      {"HardSigmoid", false, [](GraphBuilder&, onnx::NodeProto* n) { GraphBuilder::Float(n, "alpha", 0.3f); GraphBuilder::Float(n, "beta", 0.4f); },
       [](double v, int64_t) { return std::max(0.0, std::min(1.0, 0.3f * v + 0.4f)); }},
      {"HardSigmoid", false, none, [](double v, int64_t) { return std::max(0.0, std::min(1.0, 0.2f * v + 0.5)); }},
      {"HardSwish", false, none, [](double v, int64_t) { return v * std::max(0.0, std::min(1.0, v / 6.0 + 0.5)); }},
      {"Erf", false, none, [](double v, int64_t) { return std::erf(v); }},
      {"Gelu", false, none, [](double v, int64_t) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }},
      {"Gelu", false, [](GraphBuilder&, onnx::NodeProto* n) { GraphBuilder::Str(n, "approximate", "tanh"); },
       [k](double v, int64_t) { return 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))); }},
      {"Pow", false, [](GraphBuilder& b, onnx::NodeProto* n) { b.Init("p", torch::tensor(3.0f)); n->add_input("p"); },
       [](double v, int64_t) { return v * v * v; }},
      {"Sqrt", true, none, [](double v, int64_t) { return std::sqrt(std::fabs(v)); }},
      {"Log", true, none, [](double v, int64_t) { return std::log(std::fabs(v)); }},
      {"Reciprocal", true, none, [](double v, int64_t) { return 1.0 / std::fabs(v); }},
      {"Exp", false, none, [](double v, int64_t) { return std::exp(v); }},
      {"Neg", false, none, [](double v, int64_t) { return -v; }},
      {"PRelu", false, [&slope](GraphBuilder& b, onnx::NodeProto* n) {
         b.Init("slope", torch::tensor(slope));
         n->add_input("slope");
       },
       [&slope](double v, int64_t f) { return v >= 0 ? v : slope[static_cast<size_t>(f)] * v; }},
      {"Elu", false, [](GraphBuilder&, onnx::NodeProto* n) { GraphBuilder::Float(n, "alpha", 0.7f); },
       [](double v, int64_t) { return v > 0 ? v : 0.7f * (std::exp(v) - 1.0); }},
      {"Selu", false, [](GraphBuilder&, onnx::NodeProto* n) { GraphBuilder::Float(n, "alpha", 1.5f); GraphBuilder::Float(n, "gamma", 1.25f); },
       [](double v, int64_t) { return 1.25 * (v > 0 ? v : 1.5 * (std::exp(v) - 1.0)); }},
      {"Softplus", false, none, [](double v, int64_t) { return std::log(std::exp(v) + 1.0); }},
      {"Max", false, [](GraphBuilder& b, onnx::NodeProto* n) {
         b.Init("c1", torch::full({8}, 0.5f));
         b.Init("c2", torch::arange(8).to(torch::kFloat32) - 4.0f);
         n->add_input("c1");
         n->add_input("c2");
       },
       [](double v, int64_t f) { return std::max({v, 0.5, static_cast<double>(f) - 4.0}); }},
      {"Min", false, [](GraphBuilder& b, onnx::NodeProto* n) { b.Init("c1", torch::full({8}, 0.5f)); n->add_input("c1"); },
       [](double v, int64_t) { return std::min(v, 0.5); }},
  };
  for (const Case& c : cases) {
    GraphBuilder b;
    b.Input("x", {-1, 1, 2, 4});
    b.Node("Flatten", "/flat", {"x"}, {"f"});
    if (c.positive) b.Node("Abs", "/abs", {"f"}, {"a"});
    c.setup(b, b.Node(c.op, "/act/" + c.op, {c.positive ? "a" : "f"}, {"y"}));
    b.Output("y");
    auto m = LoadOnnxModel(b.Save("elementwise.onnx"));
    torch::NoGradGuard ng;
    const torch::Tensor y = m->forward(x).to(torch::kFloat64);
    const torch::Tensor xf = x.reshape({3, 8}).to(torch::kFloat64);
    ASSERT_EQ(y.sizes(), xf.sizes()) << c.op;
    double worst = 0;
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t f = 0; f < 8; ++f) {
        const double want = c.want(xf[i][f].item<double>(), f), got = y[i][f].item<double>();
        worst = std::max(worst, std::fabs(got - want) / std::max(1.0, std::fabs(want)));
      }
    }
    EXPECT_LT(worst, 2e-6) << c.op;
  }
}

// LayerNormalization (opset 17) over the axes from `axis` on, against its definition in double:
// a Scale of the normalised shape, no B, a non-default epsilon; the training outputs are refused.
TEST(Onnx, LayerNormalizationFollowsTheOnnxDefinition) {
  torch::manual_seed(6);
  const torch::Tensor x = torch::randn({2, 2, 3, 4}) * 2.0 + 0.5;
  const torch::Tensor scale = torch::randn({3, 4});
  {
    GraphBuilder b;
    b.Input("x", {-1, 2, 3, 4});
    b.Init("scale", scale);
    auto* n = b.Node("LayerNormalization", "/ln", {"x", "scale"}, {"n"});
    GraphBuilder::Int(n, "axis", 2);
    GraphBuilder::Float(n, "epsilon", 0.01f);
    b.Node("Flatten", "/flat", {"n"}, {"y"});
    b.Output("y");
    auto m = LoadOnnxModel(b.Save("layernorm.onnx"));
    torch::NoGradGuard ng;
    const torch::Tensor y = m->forward(x).to(torch::kFloat64).reshape({2, 2, 12});
    const torch::Tensor xd = x.to(torch::kFloat64).reshape({2, 2, 12}), sd = scale.to(torch::kFloat64).reshape({12});
    double worst = 0;
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t c = 0; c < 2; ++c) {
        double mean = 0, var = 0;
        for (int64_t k = 0; k < 12; ++k) mean += xd[i][c][k].item<double>() / 12.0;
        for (int64_t k = 0; k < 12; ++k) var += std::pow(xd[i][c][k].item<double>() - mean, 2) / 12.0;
        for (int64_t k = 0; k < 12; ++k) {
          const double want = (xd[i][c][k].item<double>() - mean) / std::sqrt(var + 0.01f) * sd[k].item<double>();
          worst = std::max(worst, std::fabs(y[i][c][k].item<double>() - want));
        }
      }
    }
    EXPECT_LT(worst, 1e-5);
  }
  {
    GraphBuilder b;
    b.Input("x", {-1, 2, 3, 4});
    b.Init("scale", scale);
    b.Node("LayerNormalization", "/ln", {"x", "scale"}, {"n", "mean"});
    b.Node("Flatten", "/flat", {"n"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("layernorm-mean.onnx"), "the Mean and InvStdDev outputs are not supported");
  }
}

TEST(Onnx, ErrorsNameTheNodeAndWhatIsExpected) {
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Floor", "/act/Floor", {"x"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("floor.onnx"),
                    "node '/act/Floor' (Floor): op Floor is not supported; supported ops: Abs, Add, AveragePool");
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 3});
    b.Node("Relu", "r", {"x"}, {"y"});
    b.Output("y");
    EXPECT_THROW(LoadOnnxModel(b.Save("flat.onnx")), InputError);  // not N x C x H x W
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Relu", "r", {"nothing"}, {"y"});
    b.Output("y");
    EXPECT_THROW(LoadOnnxModel(b.Save("dangling.onnx")), InputError);
  }
  {
    // Found by fuzzing (fuzz/corpus/onnx/regression-node-without-output.onnx): an unnamed node
    // without outputs was named after output(0), which does not exist.
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Relu", "", {"x"}, {});
    b.Output("x");
    EXPECT_THROW(LoadOnnxModel(b.Save("no-output.onnx")), InputError);
  }
  {
    // Found by fuzzing: a 2^20 x 2^20 initializer without data was allocated (4 TB) before its
    // data was checked.
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.InitShapeOnly("w", {1 << 20, 1 << 20});
    b.Node("Relu", "r", {"x"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("huge.onnx"), "tensor 'w' of shape [1048576, 1048576] holds 0 values or bytes");
  }
  {
    // A MatMul over the last axis of a tensor whose first axis is not the images (an attention
    // block's [L, N, C]): not a 1x1 convolution over positions of one image; refused at load.
    torch::manual_seed(2);
    GraphBuilder b;
    b.Input("x", {-1, 1, 4, 4});
    b.Init("w", torch::randn({4, 3}));
    GraphBuilder::Ints(b.Node("Transpose", "/t0", {"x"}, {"t"}), "perm", {2, 0, 1, 3});  // [4, N, 1, 4]
    b.Node("MatMul", "/proj/MatMul", {"t", "w"}, {"p"});
    GraphBuilder::Ints(b.Node("Transpose", "/t1", {"p"}, {"q"}), "perm", {1, 0, 2, 3});  // [N, 4, 1, 3]
    b.Node("Flatten", "/flat", {"q"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("lnc.onnx"), "node '/proj/MatMul' (MatMul): input [4, 1, 1, 4] for one image; xbar maps");
  }
  // An ONNX graph names each value once: a second definition was taken silently (the last
  // initializer of a name won; a node writing an input or initializer shadowed it).
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Node("Conv", "c", {"x", "w"}, {"y"});
    b.Output("y");
    const std::string path = b.Save("twice-init.onnx");
    ExpectLoadError(path, path + ": initializer 'w' is defined twice");
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Node("Relu", "r", {"x"}, {"w"});
    b.Node("Conv", "c", {"x", "w"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("shadow-init.onnx"), "node 'r' (Relu): writes 'w', which an earlier node, initializer or input");
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Relu", "r1", {"x"}, {"y"});
    b.Node("Sigmoid", "r2", {"y"}, {"y"});
    b.Output("y");
    ExpectLoadError(b.Save("twice-output.onnx"), "node 'r2' (Sigmoid): writes 'y'");
  }
  const std::string junk = JoinPath(::testing::TempDir(), "junk.onnx");
  WriteFileAtomic(junk, "\x08\x07not a protobuf at all \xff\xff\xff");
  EXPECT_THROW(LoadOnnxModel(junk), InputError);
}

}  // namespace
}  // namespace xbar
