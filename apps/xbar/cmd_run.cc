// xbar run -c EXP.yaml [--weights IN.safetensors] [-o DIR] [--force] [--only STAGE] [--until STAGE] [--quiet]
//
// The whole pipeline from one experiment file: train (or import --weights) -> compress -> simulate
// (one per scheme of run.schemes) -> faults -> estimate (the final weights on this run's hardware
// description, the trained ones too when compressed, and the final ones on the reference chips of
// run.estimate_presets) -> report. Every stage is the standalone command of the
// same name, called with the same file and --set overrides, so all of them resolve the same
// hardware description; each writes into its own subfolder of the run directory.
//
// Each stage has a key: a hash of the config sections it reads, the keys of the stages it reads
// from (and the bytes of an imported weights file) and the xbar version. A stage whose stage.json
// holds the current key is skipped; a changed key redoes that stage, and since keys chain,
// everything after it. A stage that was started but not finished (Ctrl-C, SIGKILL, a crash) left
// stage.started with its key: the next run resumes it from its checkpoints (train, compress and
// faults keep them) when the key is unchanged, and starts it afresh otherwise.
//
// results.json gathers every stage's result file; report.html, report/*.svg and report/*.csv are
// the report (report.h); run.log holds everything the run printed, without the redrawn bars.
#include <torch/version.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/models/onnx.h"
#include "xbar/report/report.h"

namespace xbar::app {
namespace {

struct RunArgs {
  std::string config, out, weights, only, until;
  std::vector<std::string> sets;
  bool force = false, quiet = false;
};

const std::vector<std::string> kStages = {"train", "compress", "simulate", "faults", "estimate", "report"};

// Copies stdout and stderr into a log file while they still reach the terminal. Lines are
// written to the log once complete; of a line redrawn with '\r' only the last state is kept, and
// terminal escape sequences are dropped.
class LogTee {
 public:
  explicit LogTee(const std::string& path) {
    log_ = std::fopen(path.c_str(), "a");
    if (log_ == nullptr) throw InputError(StrCat(path, ": cannot open the run log for writing"));
    Progress::SetTerminal(::isatty(2) ? 1 : 0);
    for (int i = 0; i < 2; ++i) Attach(streams_[i], i + 1);
  }
  ~LogTee() {
    std::fflush(stdout);
    std::fflush(stderr);
    for (Stream& s : streams_) {
      if (s.saved < 0) continue;
      ::dup2(s.saved, s.fd);  // closes the pipe's last write end: the reader sees EOF
      if (s.reader.joinable()) s.reader.join();
      ::close(s.saved);
    }
    Progress::SetTerminal(-1);
    std::fclose(log_);
  }
  // A line for the log only.
  void Note(const std::string& line) { Log(line); }
  LogTee(const LogTee&) = delete;
  LogTee& operator=(const LogTee&) = delete;

 private:
  struct Stream {
    int fd = -1, saved = -1;
    std::thread reader;
  };

  void Attach(Stream& s, int fd) {
    std::fflush(fd == 1 ? stdout : stderr);
    int p[2];
    if (::pipe(p) != 0) return;  // no log rather than no run
    s.fd = fd;
    s.saved = ::dup(fd);
    ::dup2(p[1], fd);
    ::close(p[1]);
    const int in = p[0], out = s.saved;
    s.reader = std::thread([this, in, out] {
      std::string line;
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(in, buf, sizeof(buf));
        if (n <= 0) break;
        for (ssize_t done = 0; done < n;) {
          const ssize_t w = ::write(out, buf + done, static_cast<size_t>(n - done));
          if (w <= 0) break;
          done += w;
        }
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] == '\n') {
            Log(line);
            line.clear();
          } else {
            line += buf[i];
          }
        }
      }
      if (!line.empty()) Log(line);
      ::close(in);
    });
  }

  void Log(const std::string& raw) {
    std::string s = raw.substr(raw.rfind('\r') == std::string::npos ? 0 : raw.rfind('\r') + 1);
    std::string clean;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\033' && i + 1 < s.size() && s[i + 1] == '[') {
        i += 2;
        while (i < s.size() && !(s[i] >= '@' && s[i] <= '~')) ++i;
        continue;
      }
      clean += s[i];
    }
    if (clean.empty() && !s.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::fprintf(log_, "%s\n", clean.c_str());
    std::fflush(log_);
  }

  std::FILE* log_ = nullptr;
  std::mutex mu_;
  Stream streams_[2];
};

std::string Hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// The text a shell would take back: single-quoted when it holds anything but safe characters.
std::string Quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+") ==
                        std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

nlohmann::ordered_json ReadJsonFile(const std::string& path) {
  try {
    return nlohmann::ordered_json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(StrCat(path, ": not valid JSON (", e.what(), "); delete the stage's folder or run with --force"));
  }
}

class Pipeline {
 public:
  Pipeline(const RunArgs& a, RunContext ctx) : a_(a), ctx_(std::move(ctx)), cfg_(ctx_.cfg), dir_(ctx_.run_dir) {
    for (const std::string& s : cfg_.EnumList("run.stages")) enabled_.insert(s);
    compress_ = enabled_.count("compress") > 0 && HasCompression();
    // The train stage imports --weights, or else model.onnx's own weights (a network brought
    // trained; `xbar train --model` fine-tunes it); an ONNX import stays ONNX (train/model.onnx).
    imported_ = !a_.weights.empty() ? a_.weights : cfg_.Str("model.onnx");
    if (!imported_.empty()) {
      if (LooksLikeOnnx(imported_, ReadFile(imported_))) train_file_ = "model.onnx";
    }
    if (enabled_.count("faults")) FaultModels();  // config errors before any work
  }

  // The pipeline ended without an error: its resolved config beside results.json (if no report wrote it).
  void Finish() const { FinishRun(ctx_); }

  void Run() {
    const auto begin = std::chrono::steady_clock::now();
    const bool bounded = !a_.only.empty() || !a_.until.empty();
    // The stages' own printing goes to stderr (and the log): stdout carries only the summary.
    std::fflush(stdout);
    const int saved_stdout = ::dup(1);
    if (saved_stdout >= 0) ::dup2(2, 1);
    struct Restore {
      int fd;
      void Now() {
        std::fflush(stdout);
        if (fd >= 0) {
          ::dup2(fd, 1);
          ::close(fd);
        }
        fd = -1;
      }
      ~Restore() { Now(); }
    } restore{saved_stdout};
    std::set<std::string> needed;  // --only: the stages it reads from, directly or not
    if (!a_.only.empty()) Needed(a_.only, &needed);
    for (const std::string& stage : kStages) {
      if (!enabled_.count(stage)) continue;
      if (!a_.only.empty() && stage != a_.only) {
        // The inputs of --only must be finished with their current keys.
        if (!needed.count(stage) || (stage == "compress" && !compress_)) continue;
        if (!UpToDate(stage)) {
          throw ConfigError(StrCat("xbar run --only ", a_.only, ": its input stage ", stage, " is not finished with ",
                                   "this config in ", dir_, "; run `xbar run --until ", stage, "` first"));
        }
        Record(stage, "up to date", 0);
        continue;
      }
      if (InterruptRequested()) {
        throw InterruptedError(StrCat("xbar run: interrupted before stage ", stage,
                                      "; run the same xbar run command again to continue, finished stages are kept"));
      }
      RunStage(stage);
      if (!a_.until.empty() && stage == a_.until) break;
    }
    const nlohmann::ordered_json results = WriteResults();
    restore.Now();
    if (!bounded || enabled_.count("report")) PrintSummary(results, begin);
  }

 private:
  // ---- stage definitions ---------------------------------------------------------------------

  bool HasCompression() const {
    for (const std::string& k : cfg_.KeysWithPrefix("compress.")) {
      if (cfg_.IsSet(k)) return true;
    }
    return false;
  }

  std::string StageDir(const std::string& stage) const { return JoinPath(dir_, stage); }

  // The stage whose weights the later stages read: compress when it runs, else train.
  std::string FinalWeightsStage() const { return compress_ ? "compress" : "train"; }
  std::string Weights(const std::string& stage) const {
    return JoinPath(StageDir(stage), stage == "train" ? train_file_ : "model.safetensors");
  }

  std::vector<std::string> FaultModels() const {
    std::vector<std::string> out;
    for (const std::string& m : cfg_.EnumList("run.faults_models")) {
      if (m == "compressed" && !compress_) {
        throw ConfigError(StrCat(cfg_.Where("run.faults_models"), ": run.faults_models: 'compressed' needs the compress ",
                                 "stage (a compress section and compress in run.stages)"));
      }
      out.push_back(m == "trained" ? "train" : "compress");
    }
    if (out.empty()) out.push_back(FinalWeightsStage());
    return out;
  }

  std::vector<std::string> Schemes() const {
    std::vector<std::string> s = cfg_.EnumList("run.schemes");
    if (s.empty()) s.push_back(cfg_.Str("mapping.scheme"));
    return s;
  }

  // Config sections (and single keys) each stage reads, and the stages it reads from.
  std::vector<std::string> Sections(const std::string& stage) const {
    if (stage == "train") return {"dataset", "model", "train"};
    if (stage == "compress") return {"compress", "mapping"};
    if (stage == "simulate") {
      // One chip: the campaign's own keys (faults.rates, .samples, ...) do not change it.
      return {"mapping", "device", "simulate", "arch", "run.schemes", "faults.rate", "faults.sa0_to_sa1", "faults.sa0_rate",
              "faults.sa1_rate", "faults.placement", "faults.map"};
    }
    if (stage == "faults") return {"mapping", "device", "faults", "simulate", "arch", "run.faults_models"};
    if (stage == "estimate") return {"mapping", "device", "arch", "estimate", "run.estimate_presets"};
    return {"report", "name"};
  }
  std::vector<std::string> Inputs(const std::string& stage) const {
    if (stage == "train") return {};
    if (stage == "compress") return {"train"};
    if (stage == "faults") return FaultModels();
    if (stage == "report") {
      std::vector<std::string> in;
      for (const std::string& s : kStages) {
        if (s != "report" && Active(s)) in.push_back(s);
      }
      return in;
    }
    return {FinalWeightsStage()};
  }
  void Needed(const std::string& stage, std::set<std::string>* out) const {
    for (const std::string& in : Inputs(stage)) {
      if (out->insert(in).second) Needed(in, out);
    }
  }
  bool Active(const std::string& stage) const { return enabled_.count(stage) && (stage != "compress" || compress_); }

  std::string Key(const std::string& stage) {
    if (auto it = keys_.find(stage); it != keys_.end()) return it->second;
    nlohmann::ordered_json fp;
    fp["stage"] = stage;
    fp["xbar"] = XBAR_VERSION;
    fp["seed"] = cfg_.Text("seed");
    for (const std::string& sec : Sections(stage)) {
      if (sec.find('.') != std::string::npos || sec == "name") {
        fp[sec] = cfg_.Text(sec);
        continue;
      }
      for (const std::string& k : cfg_.KeysWithPrefix(sec + ".")) {
        if (ChangesResults(k)) fp[k] = cfg_.Text(k);
      }
    }
    if (stage == "train" && !imported_.empty()) fp["imported weights (FNV-1a)"] = Hex(HashBytes(ReadFile(imported_)));
    // An ONNX network is an input like imported weights: its bytes, not its path, decide.
    if (const std::string& onnx = cfg_.Str("model.onnx"); !onnx.empty() && FileExists(onnx)) {
      fp["model.onnx (FNV-1a)"] = Hex(HashBytes(ReadFile(onnx)));
    }
    for (const std::string& in : Inputs(stage)) fp["input " + in] = Key(in);
    return keys_[stage] = Hex(HashBytes(fp.dump()));
  }

  bool UpToDate(const std::string& stage) {
    const std::string done = JoinPath(StageDir(stage), "stage.json");
    if (!FileExists(done)) return false;
    const nlohmann::ordered_json j = ReadJsonFile(done);
    return j.contains("key") && j["key"] == Key(stage);
  }

  // ---- running -------------------------------------------------------------------------------

  std::string Cmd(const std::string& sub, const std::vector<std::string>& extra) const {
    std::string c = "xbar " + sub + " -c " + Quote(a_.config);
    for (const std::string& s : a_.sets) c += " --set " + Quote(s);
    for (const std::string& e : extra) c += " " + e;
    return c;
  }

  void Header(const std::string& stage, const std::string& what) const {
    std::fprintf(stderr, "\n== %s: %s\n", stage.c_str(), what.c_str());
  }

  void RunStage(const std::string& stage) {
    if (stage == "compress" && !compress_) {
      Header(stage, "no compress section in the experiment: the trained weights go on unchanged");
      Record(stage, "passed through", 0);
      return;
    }
    const std::string key = Key(stage);
    const std::string sdir = StageDir(stage);
    if (!a_.force && UpToDate(stage)) {
      Header(stage, StrCat("up to date (key ", key, "), skipped"));
      const nlohmann::ordered_json j = ReadJsonFile(JoinPath(sdir, "stage.json"));
      Record(stage, "up to date", j.value("seconds", 0.0), j.value("command", ""));
      return;
    }
    const std::string started = JoinPath(sdir, "stage.started");
    const bool resume = !a_.force && FileExists(started) && ReadFile(started) == key;
    if (!resume) {
      std::error_code ec;
      std::filesystem::remove_all(sdir, ec);
      if (ec) throw InputError(StrCat(sdir, ": cannot clear the stage's folder (", ec.message(), ")"));
    }
    MakeDirs(sdir);
    WriteFileAtomic(started, key);
    Header(stage, resume ? StrCat("resuming an unfinished run (key ", key, ")") : StrCat("running (key ", key, ")"));
    const auto t0 = std::chrono::steady_clock::now();
    std::string command;
    try {
      command = Execute(stage, resume);
    } catch (const InterruptedError& e) {
      throw InterruptedError(StrCat("xbar run: interrupted in stage ", stage, " (", e.what(),
                                    "); run the same xbar run command again to resume, finished stages are kept"));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    WriteJson(JoinPath(sdir, "stage.json"),
              {{"schema_version", 1}, {"stage", stage}, {"key", key}, {"seconds", seconds}, {"command", command}});
    std::remove(started.c_str());
    Record(stage, resume ? "resumed" : "ran", seconds, command);
    WriteResults();  // what is finished so far
  }

  // Runs one stage; returns its equivalent standalone command(s).
  std::string Execute(const std::string& stage, bool resume) {
    const std::string sdir = StageDir(stage);
    if (stage == "train") {
      if (!imported_.empty()) {
        // Imported weights: copied into the run (the run directory then holds all its inputs), evaluated.
        WriteFileAtomic(Weights("train"), ReadFile(imported_));
        EvalArgs e{a_.config, Weights("train"), sdir, a_.sets};
        RunEval(e);
        nlohmann::ordered_json j = ReadJsonFile(JoinPath(sdir, "eval.json"));
        j["weights"] = train_file_;
        j["imported_from"] = imported_;
        WriteJson(JoinPath(sdir, "train.json"), j);
        return "cp " + Quote(imported_) + " " + Quote(Weights("train")) + "\n" +
               Cmd("eval", {"--weights", Quote(Weights("train")), "-o", Quote(sdir)});
      }
      RunTrain(TrainArgs{a_.config, sdir, a_.sets, resume});
      return Cmd("train", {"-o", Quote(sdir)});
    }
    if (stage == "compress") {
      RunCompress(CompressArgs{a_.config, Weights("train"), sdir, a_.sets, resume});
      return Cmd("compress", {"--weights", Quote(Weights("train")), "-o", Quote(sdir)});
    }
    if (stage == "simulate") {
      std::string cmds;
      for (const std::string& scheme : Schemes()) {
        std::vector<std::string> extra = {"mapping.scheme=" + scheme};
        // faults.placement: both is the campaign's (placed and unplaced curves); one chip is simulated unplaced.
        if (cfg_.Str("faults.placement") == "both") extra.push_back("faults.placement=off");
        std::vector<std::string> sets = a_.sets;
        std::vector<std::string> cmd_sets;
        for (const std::string& e : extra) {
          sets.push_back(e);
          cmd_sets.push_back("--set");
          cmd_sets.push_back(Quote(e));
        }
        const std::string out = JoinPath(sdir, scheme);
        std::fprintf(stderr, "-- simulate: scheme %s\n", scheme.c_str());
        RunSimulate(SimulateArgs{a_.config, Weights(FinalWeightsStage()), out, sets});
        for (const std::string& x : {std::string("--weights"), Quote(Weights(FinalWeightsStage())), std::string("-o"), Quote(out)}) {
          cmd_sets.push_back(x);
        }
        cmds += (cmds.empty() ? "" : "\n") + Cmd("simulate", cmd_sets);
      }
      return cmds;
    }
    if (stage == "faults") {
      FaultsArgs f{a_.config, sdir, {}, a_.sets, resume};
      std::vector<std::string> extra;
      for (const std::string& m : FaultModels()) {
        f.weights.push_back(Weights(m));
        extra.push_back("--weights");
        extra.push_back(Quote(Weights(m)));
      }
      RunFaults(f);
      extra.push_back("-o");
      extra.push_back(Quote(sdir));
      return Cmd("faults", extra);
    }
    if (stage == "estimate") {
      const std::string w = Weights(FinalWeightsStage());
      RunEstimate(EstimateArgs{a_.config, w, JoinPath(sdir, "own"), "", a_.sets});
      std::string cmds = Cmd("estimate", {"--weights", Quote(w), "-o", Quote(JoinPath(sdir, "own"))});
      if (compress_ && cfg_.Str("mapping.scheme") == "polarized") {
        std::fprintf(stderr, "-- estimate: the trained weights are not priced on this chip: its polarized scheme needs "
                             "polarised weights\n");
      } else if (compress_) {
        // The trained (dense) weights on the same chip: what compression saves.
        std::fprintf(stderr, "-- estimate: the trained (dense) weights on the same hardware description\n");
        RunEstimate(EstimateArgs{a_.config, Weights("train"), JoinPath(sdir, "dense"), "", a_.sets});
        cmds += "\n" + Cmd("estimate", {"--weights", Quote(Weights("train")), "-o", Quote(JoinPath(sdir, "dense"))});
      }
      for (const std::string& p : cfg_.EnumList("run.estimate_presets")) {
        std::fprintf(stderr, "-- estimate: the same weights on the %s preset\n", p.c_str());
        RunEstimate(EstimateArgs{a_.config, w, JoinPath(sdir, p), p, a_.sets});
        cmds += "\n" + Cmd("estimate", {"--weights", Quote(w), "--preset", p, "-o", Quote(JoinPath(sdir, p))});
      }
      return cmds;
    }
    // report
    FinishRun(ctx_);  // the report shows the resolved config
    const Report rep = BuildReport(WriteResults(), ReadFile(JoinPath(dir_, "config.resolved.yaml")));
    const std::string fig_dir = JoinPath(dir_, "report");
    MakeDirs(fig_dir);
    for (const ReportFigure& f : rep.figures) {
      WriteFileAtomic(JoinPath(fig_dir, f.id + ".svg"), f.svg);
      WriteFileAtomic(JoinPath(fig_dir, f.id + ".csv"), f.csv);
    }
    WriteFileAtomic(JoinPath(dir_, "report.html"), rep.html);
    std::fprintf(stderr, "wrote %s (%zu figures, each also as report/<name>.svg and .csv)\n",
                 JoinPath(dir_, "report.html").c_str(), rep.figures.size());
    return "(built from results.json by xbar run)";
  }

  void Record(const std::string& stage, const std::string& status, double seconds, const std::string& command = "") {
    stages_[stage] = {{"status", status}, {"seconds", seconds}, {"key", stage == "compress" && !compress_ ? "" : Key(stage)},
                      {"command", command}};
  }

  // ---- results -------------------------------------------------------------------------------

  nlohmann::ordered_json Results() {
    nlohmann::ordered_json r;
    r["schema_version"] = 1;
    r["name"] = cfg_.Str("name");
    r["title"] = cfg_.Str("report.title").empty() ? cfg_.Str("name") : cfg_.Str("report.title");
    auto take = [&](const std::string& stage, const std::string& file) -> nlohmann::ordered_json {
      const std::string p = JoinPath(StageDir(stage), file);
      // Only results of this config: a stage left from another key is not this run's.
      if (!UpToDate(stage) || !FileExists(p)) return nullptr;
      return ReadJsonFile(p);
    };
    if (Active("train")) r["train"] = take("train", "train.json");
    if (Active("compress")) r["compress"] = take("compress", "compress.json");
    if (Active("simulate")) {
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      for (const std::string& s : Schemes()) {
        nlohmann::ordered_json j = take("simulate", JoinPath(s, "simulate.json"));
        if (!j.is_null()) all.push_back(j);
      }
      // "simulate": the run's own mapping.scheme (else the first simulated).
      r["simulate"] = nullptr;
      for (const auto& j : all) {
        if (j.value("scheme", "") == cfg_.Str("mapping.scheme")) r["simulate"] = j;
      }
      if (r["simulate"].is_null() && !all.empty()) r["simulate"] = all[0];
      r["simulate_schemes"] = all;
    }
    if (Active("faults")) r["faults"] = take("faults", "faults.json");
    if (Active("estimate")) {
      r["estimate"] = take("estimate", JoinPath("own", "estimate.json"));
      if (compress_ && FileExists(JoinPath(StageDir("estimate"), JoinPath("dense", "estimate.json")))) {
        r["estimate_dense"] = take("estimate", JoinPath("dense", "estimate.json"));
      }
      nlohmann::ordered_json presets = nlohmann::ordered_json::object();
      for (const std::string& p : cfg_.EnumList("run.estimate_presets")) {
        nlohmann::ordered_json j = take("estimate", JoinPath(p, "estimate.json"));
        if (!j.is_null()) presets[p] = j;
      }
      r["estimate_presets"] = presets;
    }
    r["stages"] = stages_;
    std::string command = "xbar run -c " + Quote(a_.config);
    for (const std::string& s : a_.sets) command += " --set " + Quote(s);
    if (!a_.weights.empty()) command += " --weights " + Quote(a_.weights);
    if (!a_.out.empty()) command += " -o " + Quote(a_.out);
    r["provenance"] = {{"xbar_version", XBAR_VERSION},
                       {"libtorch_version", StrCat(TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".", TORCH_VERSION_PATCH)},
                       {"command", command},
                       {"run_dir", dir_},
                       {"threads", ctx_.threads}};
    return r;
  }

  nlohmann::ordered_json WriteResults() {
    nlohmann::ordered_json r = Results();
    WriteJson(JoinPath(dir_, "results.json"), r);
    return r;
  }

  void PrintSummary(const nlohmann::ordered_json& results, std::chrono::steady_clock::time_point begin) {
    const std::vector<std::string> summary = ReportSummary(results);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    for (const std::string& line : summary) std::printf("%s\n", line.c_str());
    if (FileExists(JoinPath(dir_, "report.html"))) {
      std::printf("report: %s (run took %s; results.json and run.log beside it)\n", JoinPath(dir_, "report.html").c_str(),
                  FormatDuration(s).c_str());
    } else {
      std::printf("results: %s (run took %s)\n", JoinPath(dir_, "results.json").c_str(), FormatDuration(s).c_str());
    }
    std::fflush(stdout);
  }

  const RunArgs& a_;
  RunContext ctx_;
  const Config& cfg_;
  std::string dir_;
  std::set<std::string> enabled_;
  std::string imported_;                         // --weights, or model.onnx: the train stage imports it
  std::string train_file_ = "model.safetensors";  // the train stage's weights file (model.onnx for ONNX)
  bool compress_ = false;
  std::map<std::string, std::string> keys_;
  nlohmann::ordered_json stages_ = nlohmann::ordered_json::object();
};

void RunRun(const RunArgs& a) {
  for (const std::string* s : {&a.only, &a.until}) {
    if (!s->empty() && std::find(kStages.begin(), kStages.end(), *s) == kStages.end()) {
      throw ConfigError(StrCat("xbar run: unknown stage '", *s, "'; expected one of train, compress, simulate, faults, "
                              "estimate, report"));
    }
  }
  if (!a.only.empty() && !a.until.empty()) throw ConfigError("xbar run: give --only or --until, not both");
  if (!a.weights.empty() && !FileExists(a.weights)) throw InputError(StrCat(a.weights, ": no such weights file"));
  if (a.quiet) Progress::SetEnabled(false);
  RunContext ctx = Setup(a.config, a.sets, a.out, /*default_run_dir=*/true);
  const Config& cfg = ctx.cfg;
  for (const std::string* s : {&a.only, &a.until}) {
    const auto& st = cfg.EnumList("run.stages");
    if (!s->empty() && std::find(st.begin(), st.end(), *s) == st.end()) {
      throw ConfigError(StrCat("xbar run: stage '", *s, "' is not in run.stages (", cfg.Where("run.stages"), ")"));
    }
  }
  const std::string dir = ctx.run_dir;
  LogTee tee(JoinPath(dir, "run.log"));
  std::fprintf(stderr, "xbar run: %s, run directory %s, stages:", cfg.Str("name").c_str(), dir.c_str());
  for (const std::string& s : cfg.EnumList("run.stages")) std::fprintf(stderr, " %s", s.c_str());
  std::fprintf(stderr, "\n");
  Pipeline p(a, std::move(ctx));
  try {
    p.Run();
    p.Finish();
  } catch (const std::exception& e) {
    tee.Note(StrCat("xbar: ", e.what()));  // main prints it to the terminal once the tee is gone
    throw;
  }
}

}  // namespace

void RegisterRun(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "the whole pipeline from one file: train, compress, simulate, faults, estimate, report");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "start from these trained weights (.safetensors) instead of training");
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>)");
  cmd->add_flag("--force", args->force, "redo every stage, ignoring finished ones and checkpoints");
  cmd->add_option("--only", args->only, "run just this stage (the earlier ones must be finished)");
  cmd->add_option("--until", args->until, "stop after this stage");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress bars (stage headers and results still print)");
  cmd->callback([args]() { RunRun(*args); });
}

}  // namespace xbar::app
