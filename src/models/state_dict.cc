#include "xbar/models/state_dict.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <set>

#include "xbar/core/error.h"

namespace xbar {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

DType ToDType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return DType::kF64;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt64: return DType::kI64;
    case torch::kInt32: return DType::kI32;
    case torch::kInt16: return DType::kI16;
    case torch::kInt8: return DType::kI8;
    case torch::kUInt8: return DType::kU8;
    case torch::kBool: return DType::kBool;
    default: XBAR_CHECK(false, "unsupported tensor dtype ", t); return DType::kF32;
  }
}

torch::ScalarType ToScalarType(DType d) {
  switch (d) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat32;
}

std::string Get(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& source) {
  auto it = meta.find(key);
  if (it == meta.end()) throw InputError(StrCat(source, ": metadata lacks '", key, "'"));
  return it->second;
}

// Whether a zoo architecture has batch normalisation.
bool HasBatchNorm(const ModelSpec& spec) {
  if (spec.name == "lenet5") return false;
  if (spec.name == "resnet20" || spec.name == "resnet18") return true;
  return spec.batch_norm;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> StateDict(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

RawTensor ToRaw(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  RawTensor r;
  r.dtype = ToDType(c.scalar_type());
  r.shape.assign(c.sizes().begin(), c.sizes().end());
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  r.bytes.assign(p, p + c.numel() * static_cast<int64_t>(c.element_size()));
  return r;
}

torch::Tensor FromRaw(const RawTensor& r) {
  auto t = torch::empty(r.shape, torch::TensorOptions().dtype(ToScalarType(r.dtype)));
  if (!r.bytes.empty()) std::memcpy(t.data_ptr(), r.bytes.data(), r.bytes.size());
  return t;
}

std::map<std::string, std::string> ModelMetadata(const ModelSpec& spec, const std::string& dataset,
                                                 const std::vector<double>& norm_mean,
                                                 const std::vector<double>& norm_std) {
  std::map<std::string, std::string> m = {
      {"format", "pt"},  // the convention of Hugging Face's loaders for PyTorch state dicts
      {"architecture", spec.name},
      {"dataset", dataset},
      {"num_classes", std::to_string(spec.num_classes)},
      {"input_shape", nlohmann::json({spec.in_channels, spec.height, spec.width_px}).dump()},
      {"normalize_mean", nlohmann::json(norm_mean).dump()},
      {"normalize_std", nlohmann::json(norm_std).dump()},
      {"producer", "xbar " XBAR_VERSION},
  };
  if (spec.is_onnx()) {
    m["onnx_file"] = spec.onnx;
    m["onnx_graph_hash"] = spec.onnx_hash;
  } else {
    m["width"] = nlohmann::json(spec.width).dump();
    m["batch_norm"] = HasBatchNorm(spec) ? "true" : "false";
  }
  return m;
}

ModelSpec ModelSpecFromMetadata(const std::map<std::string, std::string>& meta, const std::string& source) {
  ModelSpec s;
  std::string missing;
  for (const char* key : {"architecture", "num_classes", "input_shape"}) {
    if (!meta.count(key)) missing += StrCat(missing.empty() ? "" : ", ", key);
  }
  if (meta.count("architecture") && meta.at("architecture") == "onnx") {
    for (const char* key : {"onnx_file", "onnx_graph_hash"}) {
      if (!meta.count(key)) missing += StrCat(missing.empty() ? "" : ", ", key);
    }
  }
  if (!missing.empty()) {
    throw InputError(StrCat(source, ": model metadata lacks ", missing, " (docs/MODELS.md lists the fields)"));
  }
  try {
    s.name = Get(meta, "architecture", source);
    if (s.is_onnx()) {
      s.onnx = meta.at("onnx_file");
      s.onnx_hash = meta.at("onnx_graph_hash");
    }
    s.num_classes = std::stoll(Get(meta, "num_classes", source));
    auto shape = nlohmann::json::parse(Get(meta, "input_shape", source)).get<std::vector<int64_t>>();
    if (shape.size() != 3) throw InputError(StrCat(source, ": metadata input_shape must be [C, H, W]"));
    s.in_channels = shape[0];
    s.height = shape[1];
    s.width_px = shape[2];
    // Bounds before anything is allocated from them (a corrupt file must not ask for 336 GB).
    if (s.num_classes < 1 || s.num_classes > 1000000) {
      throw InputError(StrCat(source, ": metadata num_classes ", s.num_classes, " is outside [1, 1000000]"));
    }
    for (int64_t d : shape) {
      if (d < 1 || d > 65536) {
        throw InputError(StrCat(source, ": metadata input_shape ", ShapeText(shape), " has a dimension outside [1, 65536]"));
      }
    }
    if (s.in_channels * s.height * s.width_px > (int64_t{1} << 28)) {
      throw InputError(StrCat(source, ": metadata input_shape ", ShapeText(shape), " is over 2^28 values per image"));
    }
    if (meta.count("width")) s.width = nlohmann::json::parse(meta.at("width")).get<double>();
    if (meta.count("batch_norm")) s.batch_norm = meta.at("batch_norm") == "true";
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw InputError(StrCat(source, ": malformed model metadata (", e.what(), ")"));
  }
  return s;
}

bool NormalizationFromMetadata(const std::map<std::string, std::string>& meta, std::vector<double>* mean,
                               std::vector<double>* std) {
  auto m = meta.find("normalize_mean"), s = meta.find("normalize_std");
  if (m == meta.end() || s == meta.end()) return false;
  try {
    *mean = nlohmann::json::parse(m->second).get<std::vector<double>>();
    *std = nlohmann::json::parse(s->second).get<std::vector<double>>();
  } catch (const std::exception&) {
    return false;
  }
  return mean->size() == std->size() && !mean->empty();
}

SafeTensors ModelToSafeTensors(torch::nn::Module& model, const std::map<std::string, std::string>& metadata) {
  SafeTensors st;
  st.metadata = metadata;
  for (const auto& [name, t] : StateDict(model)) st.tensors[name] = ToRaw(t);
  return st;
}

void SaveModel(const std::string& path, torch::nn::Module& model, const std::map<std::string, std::string>& metadata) {
  WriteSafeTensors(path, ModelToSafeTensors(model, metadata));
}

void LoadStateDict(torch::nn::Module& model, const SafeTensors& st, const std::string& source,
                   const std::string& prefix) {
  torch::NoGradGuard no_grad;
  const auto state = StateDict(model);
  std::set<std::string> known;
  for (const auto& [name, t] : state) known.insert(prefix + name);

  // The file's names as the model's: a DataParallel/DDP "module." prefix is stripped and torchvision's
  // names for the same tensors (downsample -> shortcut, fc -> linear) are mapped, each said once.
  std::map<std::string, std::string> rename;  // model name -> file name
  bool stripped = false, mapped = false;
  {
    const std::string ddp = prefix + "module.";
    bool all_ddp = !st.tensors.empty();
    for (const auto& [name, r] : st.tensors) {
      if (name.compare(0, prefix.size(), prefix) == 0) all_ddp = all_ddp && name.compare(0, ddp.size(), ddp) == 0;
    }
    bool any_known = false;
    for (const auto& [name, r] : st.tensors) any_known = any_known || known.count(name) > 0;
    for (const auto& [name, r] : st.tensors) {
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      std::string m = name;
      if (all_ddp && !any_known) {
        m = prefix + name.substr(ddp.size());
        stripped = true;
      }
      if (!known.count(m)) {
        std::string alt = m;
        for (size_t at = alt.find(".downsample."); at != std::string::npos; at = alt.find(".downsample.")) {
          alt.replace(at, 12, ".shortcut.");
        }
        if (alt.compare(0, prefix.size() + 3, prefix + "fc.") == 0) alt = prefix + "linear." + alt.substr(prefix.size() + 3);
        if (alt != m && known.count(alt)) {
          m = alt;
          mapped = true;
        }
      }
      rename[m] = name;
    }
  }
  const auto* as_model = dynamic_cast<const Model*>(&model);
  const std::string hint = as_model != nullptr && as_model->arch() != "onnx" && prefix.empty()
                               ? "; a network other than xbar's zoo definition (docs/MODELS.md) can be imported as ONNX"
                               : "";
  for (const auto& [name, t] : state) {
    auto rn = rename.find(prefix + name);
    if (rn == rename.end()) {
      throw InputError(StrCat(source, ": missing tensor '", prefix + name, "' (shape ", ShapeText(t.sizes().vec()),
                              ") that the model needs", hint));
    }
    const RawTensor& r = st.tensors.at(rn->second);
    if (r.shape != t.sizes().vec()) {
      throw InputError(StrCat(source, ": tensor '", rn->second, "' has shape ", ShapeText(r.shape),
                              " but the model expects ", ShapeText(t.sizes().vec()), hint));
    }
    const bool want_float = t.is_floating_point();
    const bool have_float = r.dtype == DType::kF64 || r.dtype == DType::kF32 || r.dtype == DType::kF16 ||
                            r.dtype == DType::kBF16;
    if (want_float != have_float) {
      throw InputError(StrCat(source, ": tensor '", rn->second, "' has dtype ", DTypeName(r.dtype),
                              ", expected a ", want_float ? "floating-point" : "integer", " type"));
    }
    t.copy_(FromRaw(r).to(t.scalar_type()));
  }
  for (const auto& [m, name] : rename) {
    if (known.count(m) == 0) {
      throw InputError(StrCat(source, ": unexpected tensor '", name, "' that the model does not have", hint));
    }
  }
  // Said once the file has loaded (a failed load prints only its error).
  if (stripped) std::fprintf(stderr, "xbar: note: %s: stripped the DataParallel 'module.' prefix from its tensor names\n", source.c_str());
  if (mapped) std::fprintf(stderr, "xbar: note: %s: mapped torchvision tensor names (downsample -> shortcut, fc -> linear)\n", source.c_str());
}

}  // namespace xbar
