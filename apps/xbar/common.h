// Shared plumbing of the xbar subcommands: config loading, run directory, threads, device, JSON.
#pragma once

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "xbar/config/config.h"
#include "xbar/data/dataset.h"
#include "xbar/models/zoo.h"

namespace xbar::app {

// What a command leaves in its run directory beyond its results: the resolved config, written with
// them by FinishRun, and the directories Setup created, removed again (when still empty) if the
// command ends with an exception.
struct RunOutputs {
  RunOutputs() = default;
  RunOutputs(const RunOutputs&) = delete;
  RunOutputs& operator=(const RunOutputs&) = delete;
  ~RunOutputs();
  std::string config_path, config_yaml;
  std::vector<std::string> created_dirs;
  bool written = false;
  int exceptions_at_start = std::uncaught_exceptions();
};

struct RunContext {
  Config cfg;
  std::string run_dir;  // "" when the command writes nothing
  torch::Device device = torch::kCPU;
  uint64_t seed = 0;
  int threads = 1;
  std::shared_ptr<RunOutputs> outputs;  // rank 0 with a run directory; shared by copies of the context
};

// Loads the experiment, applies --set overrides, resolves automatic values (threads), sets
// LibTorch's thread count, seeds torch's generator and parses the device. When `out_dir` is
// non-empty or `default_run_dir` is set, creates the run directory (rank 0 of an MPI world);
// config.resolved.yaml is written there with the results, when the command succeeds (FinishRun),
// and a failed command leaves no directory it created behind (RunOutputs). Errors are agreed
// between the ranks (dist::Agree); a command that is not `distributed` refuses to run under mpirun
// with more than one rank.
// `data_parallel`: the command trains in several processes when WORLD_SIZE says so (train,
// compress); any other command refuses WORLD_SIZE > 1.
RunContext Setup(const std::string& config_path, const std::vector<std::string>& sets, const std::string& out_dir,
                 bool default_run_dir, bool distributed = false, bool data_parallel = false);

// `cfg` with faults.placement as one chip's simulate reads it (on when any curve is placed; `both`
// is xbar faults' pair of curves), so that FaultSpec::FromConfig checks it; each of faults' curves
// then sets FaultSpec::placement itself.
Config OneChip(const Config& cfg);

// The command's results are complete: writes config.resolved.yaml next to them (rank 0; a no-op
// without a run directory or when already written).
void FinishRun(const RunContext& ctx);

// A weights file with the model it describes and the dataset it is evaluated on.
struct LoadedModel {
  std::string bytes;  // the file's content (fingerprints)
  std::map<std::string, std::string> meta;  // safetensors metadata or ONNX metadata_props
  std::string source;                       // the weights file's path
  std::shared_ptr<Model> model;
  ModelSpec spec;
  DataBundle data;
};

// Reads a weights file (safetensors or ONNX; "" = model.onnx), builds its model and loads the configured dataset normalised as the model
// was trained. The architecture comes from the file's metadata when it has one (files written by
// xbar do; a model.name set in the config must agree); a PyTorch export without metadata is built
// from the config and the data's shape. `train_split` also loads the training data; with
// `data_needed` false the data is loaded only when the file lacks the input shape (data left empty).
LoadedModel LoadModelAndData(const RunContext& ctx, const std::string& weights, bool train_split,
                             bool data_needed = true);

// The normalisation a model file's inputs get (dataset.normalize, dataset.mean/std; docs/USER_GUIDE.md):
// the file's statistics, or nullptr for LoadData to use dataset.mean/std, raw pixels or the training
// set's. InputError when dataset.normalize is auto and the file carries no statistics.
const Normalization* ResolveNormalization(const Config& cfg, const std::map<std::string, std::string>& meta,
                                          const std::string& source, Normalization* storage);

// Adds the options every experiment command shares: -c/--config (required) and repeatable --set.
void AddConfigOptions(CLI::App* cmd, std::string* config, std::vector<std::string>* sets);

// False for the keys that cannot change a result (progress logging, evaluation batch size, the
// campaign time guard): left out of resume fingerprints and `xbar run`'s stage keys.
bool ChangesResults(const std::string& key);

// The settings a resumed run must share with the run that wrote its checkpoint: every key of
// the given sections (and the seed), except those that cannot change results (ChangesResults).
std::map<std::string, std::string> Fingerprint(const Config& cfg, const std::vector<std::string>& sections);

// Pretty-printed JSON, written atomically.
void WriteJson(const std::string& path, const nlohmann::ordered_json& j);

// Per-layer quantisation steps stored by `xbar compress` (metadata "quantization"); empty when none.
std::map<std::string, double> StoredScales(const LoadedModel& m);

}  // namespace xbar::app
