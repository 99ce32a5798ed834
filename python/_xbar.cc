// The C++ side of `import xbar` (python/xbar/__init__.py is the Python side).
//
// Stages run in-process through the same command line as the xbar executable (RunCommandLine);
// models load through the same code as every stage (LoadModelAndData), and tensors cross as DLPack
// capsules: torch.utils.dlpack on the Python side, at::fromDLPack / at::toDLPack here, so inputs,
// outputs and parameters are shared, not copied.
#include <ATen/DLConvertor.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/crossbar/spec.h"
#include "xbar/models/onnx.h"

namespace py = pybind11;

namespace {

using xbar::app::LoadedModel;
using xbar::app::RunContext;

torch::Tensor FromCapsule(const py::capsule& c) {
  auto* dl = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c.ptr(), "dltensor"));
  if (dl == nullptr) throw py::error_already_set();
  torch::Tensor t = at::fromDLPack(dl);
  PyCapsule_SetName(c.ptr(), "used_dltensor");  // the tensor owns it now
  return t;
}

py::capsule ToCapsule(const torch::Tensor& t) {
  DLManagedTensor* dl = at::toDLPack(t);
  return py::capsule(dl, "dltensor", [](PyObject* o) {
    if (PyCapsule_IsValid(o, "dltensor")) {
      auto* d = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(o, "dltensor"));
      if (d && d->deleter) d->deleter(d);
    }
  });
}

// A model as every stage loads it: a weights file (safetensors or ONNX) with a config.
class PyModel {
 public:
  PyModel(const std::string& config, const std::vector<std::string>& sets, const std::string& weights) {
    ctx_ = xbar::app::Setup(config, sets, "", false);
    loaded_ = xbar::app::LoadModelAndData(ctx_, weights, /*train_split=*/false, /*data_needed=*/false);
    loaded_.model->eval();
  }
  py::capsule Forward(const py::capsule& x) {
    torch::NoGradGuard no_grad;
    return ToCapsule(loaded_.model->forward(FromCapsule(x).to(ctx_.device)).contiguous());
  }
  py::list Layers() const {
    py::list out;
    for (const auto& l : loaded_.model->layers()) {
      py::dict d;
      d["name"] = l.name;
      d["kind"] = l.kind == xbar::LayerKind::kConv2d ? "conv2d" : "linear";
      d["in_channels"] = l.in_channels;
      d["out_channels"] = l.out_channels;
      d["kernel"] = py::make_tuple(l.kernel_h, l.kernel_w);
      d["stride"] = l.stride;
      d["padding"] = l.padding;
      d["dilation"] = l.dilation;
      d["groups"] = l.groups;
      d["gemm_rows"] = l.gemm_rows();
      d["gemm_cols"] = l.gemm_cols();
      out.append(d);
    }
    return out;
  }
  // The channel spaces unused-path removal walks (model.h ChannelSpace).
  py::list ChannelSpaces() const {
    py::list out;
    for (const auto& sp : loaded_.model->ChannelSpaces()) {
      py::dict d;
      d["name"] = sp.name;
      d["channels"] = sp.channels;
      py::list w, r, p;
      for (const auto& x : sp.writers) w.append(py::make_tuple(x.layer, x.bn));
      for (const auto& x : sp.readers) r.append(py::make_tuple(x.layer, x.rows_per_channel));
      for (const auto& x : sp.passes) p.append(py::make_tuple(x.to, x.offset));
      d["writers"] = w;
      d["readers"] = r;
      d["passes"] = p;
      out.append(d);
    }
    return out;
  }
  // Parameters and buffers, sharing memory with the model.
  py::dict StateDict() const {
    py::dict out;
    for (const auto& p : loaded_.model->named_parameters()) out[py::str(p.key())] = ToCapsule(p.value().detach());
    for (const auto& b : loaded_.model->named_buffers()) out[py::str(b.key())] = ToCapsule(b.value().detach());
    return out;
  }
  py::dict Info() const {
    py::dict d;
    d["architecture"] = loaded_.spec.name;
    d["onnx"] = loaded_.spec.onnx;
    d["input_shape"] = py::make_tuple(loaded_.spec.in_channels, loaded_.spec.height, loaded_.spec.width_px);
    d["num_classes"] = loaded_.spec.num_classes;
    d["source"] = loaded_.source;
    return d;
  }
  void SaveOnnx(const std::string& path) { xbar::SaveOnnx(*loaded_.model, path, loaded_.meta); }

  RunContext ctx_;
  LoadedModel loaded_;
};

// The model on crossbars: the config's mapping, device and faults (one chip), inputs calibrated on
// the given images.
class PyAnalog {
 public:
  PyAnalog(PyModel& m, const std::string& config, const std::vector<std::string>& sets, const py::capsule& calibration)
      : model_(m) {
    ctx_ = xbar::app::Setup(config, sets, "", false);
    const xbar::MappingSpec map = xbar::MappingSpec::FromConfig(ctx_.cfg);
    const xbar::DeviceSpec device = xbar::DeviceSpec::FromConfig(ctx_.cfg);
    const xbar::FaultSpec faults = xbar::FaultSpec::FromConfig(ctx_.cfg);
    sim_ = std::make_unique<xbar::NetworkSimulator>(*m.loaded_.model, map, device, xbar::app::StoredScales(m.loaded_));
    sim_->SetQuiet(true);
    xbar::Dataset cal;
    cal.images = FromCapsule(calibration).to(torch::kFloat32).contiguous();
    cal.labels = torch::zeros({cal.images.size(0)}, torch::kInt64);
    sim_->Calibrate(cal, ctx_.cfg.Int("simulate.batch_size"), ctx_.device);
    sim_->Program(faults, ctx_.seed);
  }
  py::capsule Forward(const py::capsule& x, const std::string& mode) {
    xbar::SimMode m = xbar::SimMode::kCrossbar;
    if (mode == "float") {
      m = xbar::SimMode::kFloat;
    } else if (mode == "reference") {
      m = xbar::SimMode::kReference;
    } else if (mode != "crossbar") {
      throw xbar::ConfigError("mode: expected crossbar, reference or float, got '" + mode + "'");
    }
    return ToCapsule(sim_->Forward(FromCapsule(x).to(ctx_.device), m).contiguous());
  }
  int64_t Crossbars() const { return sim_->crossbars(); }

 private:
  PyModel& model_;
  RunContext ctx_;
  std::unique_ptr<xbar::NetworkSimulator> sim_;
};

}  // namespace

PYBIND11_MODULE(_xbar, m) {
  m.doc() = "xbar's C++ core; use the xbar package (python/xbar/__init__.py)";
  static py::exception<xbar::Error> error(m, "Error");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const xbar::Error& e) {
      py::object exc = py::reinterpret_borrow<py::object>(error.ptr())(e.what());
      exc.attr("exit_code") = e.exit_code();  // as the command line's (docs/INTERFACE.md)
      PyErr_SetObject(error.ptr(), exc.ptr());
    } catch (const c10::Error& e) {
      PyErr_SetString(error.ptr(), (std::string("LibTorch error: ") + e.what_without_backtrace()).c_str());
    }
  });
  m.def("run", &xbar::app::RunCommandLine, py::arg("args"),
        "run one xbar command line (without 'xbar') in this process; raises xbar.Error on failure",
        py::call_guard<py::gil_scoped_release>());
  m.def("version", [] { return std::string(XBAR_VERSION); });
  m.def("supported_onnx_ops", [] { return xbar::OnnxSupportedOps(); });
  py::class_<PyModel>(m, "Model")
      .def(py::init<const std::string&, const std::vector<std::string>&, const std::string&>(), py::arg("config"),
           py::arg("sets"), py::arg("weights"))
      .def("forward", &PyModel::Forward)
      .def("layers", &PyModel::Layers)
      .def("state_dict", &PyModel::StateDict)
      .def("channel_spaces", &PyModel::ChannelSpaces)
      .def("info", &PyModel::Info)
      .def("save_onnx", &PyModel::SaveOnnx);
  py::class_<PyAnalog>(m, "Analog")
      .def(py::init<PyModel&, const std::string&, const std::vector<std::string>&, const py::capsule&>(),
           py::keep_alive<1, 2>())
      .def("forward", &PyAnalog::Forward, py::arg("x"), py::arg("mode") = "crossbar")
      .def("crossbars", &PyAnalog::Crossbars);
}
