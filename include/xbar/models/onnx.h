// xbar/models/onnx.h — networks users bring themselves: an ONNX CNN executed in LibTorch.
//
// LoadOnnxModel reads an ONNX file (Debian's libonnx protobuf definitions) and builds a Model that
// runs its graph node by node with LibTorch ops. Every Conv, Gemm and MatMul whose weight is a
// constant becomes a named conv/linear layer (LayerInfo) that the crossbar simulator, the compressor
// and the cost model see exactly as they see a zoo model's layers; BatchNormalization nodes become
// batch-norm modules. Names follow the exporter: an initializer "layer1.0.conv1.weight" names the
// layer "layer1.0.conv1"; a folded weight ("onnx::Conv_538") takes the node's scope instead
// ("/features/features.17/conv/conv.2/Conv" -> "features.17.conv.2"). Channel spaces for unused-path
// removal are derived from the graph (conv/linear -> [batch norm] -> [add] -> relu -> pools ->
// readers); a tensor that reaches any other op keeps its channels out of the analysis.
//
// SaveOnnx writes the original graph back with the model's current weights (e.g. compressed ones)
// and string metadata (ONNX metadata_props), loadable by PyTorch/onnxruntime users.
//
//   std::shared_ptr<Model> m = LoadOnnxModel("lenet.onnx");
//   OnnxInfo info = ReadOnnxInfo("lenet.onnx");  // input shape, classes, metadata, graph hash
//   SaveOnnx(*m, "compressed.onnx", {{"producer", "xbar"}});
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "xbar/models/model.h"

namespace xbar {

struct OnnxInfo {
  int64_t channels = 0, height = 0, width = 0;  // the graph input [N, C, H, W]
  int64_t num_classes = 0;                      // the graph output [N, K]
  std::map<std::string, std::string> metadata;  // metadata_props
  std::string graph_hash;                       // hex hash of the graph without initializer data
};

// The ONNX ops the importer executes, sorted by name.
const std::vector<std::string>& OnnxSupportedOps();

// True when `bytes` look like an ONNX ModelProto rather than a safetensors file.
bool LooksLikeOnnx(const std::string& path, const std::string& bytes);

// Builds the model; InputError (one line naming the file, node and what was expected) for an
// unreadable file, an unsupported op or attribute, or a graph whose input is not N x C x H x W.
std::shared_ptr<Model> LoadOnnxModel(const std::string& path);
// The same from the file's content already read.
std::shared_ptr<Model> LoadOnnxModelFromBytes(const std::string& bytes, const std::string& path);

OnnxInfo ReadOnnxInfo(const std::string& path);
// The info of a model built by LoadOnnxModel.
const OnnxInfo& OnnxModelInfo(const Model& model);

// Writes `model` (built by LoadOnnxModel) as ONNX: its graph with the current weights; `metadata`
// replaces entries of metadata_props with the same key. Atomic (temp file + rename).
void SaveOnnx(Model& model, const std::string& path, const std::map<std::string, std::string>& metadata);

}  // namespace xbar
