// ONNX import on graphs built here with the protobuf API (the Python suite covers real exports):
// ops, names, channel spaces through residual adds and concats, export round trip, and errors.
#include "xbar/models/onnx.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdio>
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

TEST(Onnx, ErrorsNameTheNodeAndWhatIsExpected) {
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Erf", "/act/Erf", {"x"}, {"y"});
    b.Output("y");
    const std::string path = b.Save("erf.onnx");
    try {
      LoadOnnxModel(path);
      FAIL() << "expected an InputError";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("node '/act/Erf' (Erf): op Erf is not supported; supported ops: Add, AveragePool"),
                std::string::npos) << msg;
    }
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
    try {
      LoadOnnxModel(b.Save("huge.onnx"));
      FAIL() << "expected an InputError";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'w' of shape [1048576, 1048576] holds 0 values or bytes"),
                std::string::npos) << e.what();
    }
  }
  // An ONNX graph names each value once: a second definition was taken silently (the last
  // initializer of a name won; a node writing an input or initializer shadowed it).
  auto expect_error = [](const std::string& path, const std::string& text) {
    try {
      LoadOnnxModel(path);
      ADD_FAILURE() << "expected an InputError for " << path;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Node("Conv", "c", {"x", "w"}, {"y"});
    b.Output("y");
    const std::string path = b.Save("twice-init.onnx");
    expect_error(path, path + ": initializer 'w' is defined twice");
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Init("w", torch::randn({2, 1, 3, 3}));
    b.Node("Relu", "r", {"x"}, {"w"});
    b.Node("Conv", "c", {"x", "w"}, {"y"});
    b.Output("y");
    expect_error(b.Save("shadow-init.onnx"), "node 'r' (Relu): writes 'w', which an earlier node, initializer or input");
  }
  {
    GraphBuilder b;
    b.Input("x", {1, 1, 4, 4});
    b.Node("Relu", "r1", {"x"}, {"y"});
    b.Node("Sigmoid", "r2", {"y"}, {"y"});
    b.Output("y");
    expect_error(b.Save("twice-output.onnx"), "node 'r2' (Sigmoid): writes 'y'");
  }
  const std::string junk = JoinPath(::testing::TempDir(), "junk.onnx");
  WriteFileAtomic(junk, "\x08\x07not a protobuf at all \xff\xff\xff");
  EXPECT_THROW(LoadOnnxModel(junk), InputError);
}

}  // namespace
}  // namespace xbar
