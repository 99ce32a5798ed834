// xbar/models/state_dict.h — models to and from safetensors files, with PyTorch's names.
//
// A model file holds the state dict (parameters and buffers, e.g. "features.0.weight",
// "bn1.running_mean", "bn1.num_batches_tracked") and string metadata describing how to rebuild
// the model: architecture, dataset, num_classes, input_shape, width, batch_norm and the input
// normalisation. Loading is strict: a missing, unexpected or mis-shaped tensor is an InputError
// naming the file and the tensor.
//
//   SaveModel("runs/x/model.safetensors", *model, ModelMetadata(spec, "fashion-mnist", norm));
//   SafeTensors st = ReadSafeTensors(path);
//   ModelSpec spec = ModelSpecFromMetadata(st.metadata, path);
//   auto model = CreateModel(spec);
//   LoadStateDict(*model, st, path);
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "xbar/core/safetensors.h"
#include "xbar/models/zoo.h"

namespace xbar {

// Parameters and buffers with their PyTorch state-dict names.
std::vector<std::pair<std::string, torch::Tensor>> StateDict(torch::nn::Module& module);

// A contiguous little-endian CPU copy of `t`.
RawTensor ToRaw(const torch::Tensor& t);
// A tensor owning a copy of `r`'s bytes.
torch::Tensor FromRaw(const RawTensor& r);

// Metadata describing the model and the data normalisation it expects.
std::map<std::string, std::string> ModelMetadata(const ModelSpec& spec, const std::string& dataset,
                                                 const std::vector<double>& norm_mean,
                                                 const std::vector<double>& norm_std);
// Rebuilds a ModelSpec from metadata; InputError when fields are missing or malformed.
ModelSpec ModelSpecFromMetadata(const std::map<std::string, std::string>& meta, const std::string& source);
// Reads the normalisation stored by ModelMetadata; false when absent.
bool NormalizationFromMetadata(const std::map<std::string, std::string>& meta, std::vector<double>* mean,
                               std::vector<double>* std);

SafeTensors ModelToSafeTensors(torch::nn::Module& model, const std::map<std::string, std::string>& metadata);
void SaveModel(const std::string& path, torch::nn::Module& model, const std::map<std::string, std::string>& metadata);

// Copies tensors into the model's state dict (strict). `prefix` selects a namespace inside the
// file (checkpoints store the model under "model.").
void LoadStateDict(torch::nn::Module& model, const SafeTensors& st, const std::string& source,
                   const std::string& prefix = "");

}  // namespace xbar
