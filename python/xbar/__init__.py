"""xbar from Python: the pipeline's stages as functions, models as callables, tensors shared with torch.

    import torch, xbar
    res = xbar.simulate({"mapping": {"adc_bits": 6}}, model="lenet.onnx")       # dict of simulate.json
    res = xbar.estimate("configs/default.yaml", model=my_module, example_input=torch.randn(1, 1, 28, 28))
    net = xbar.load("lenet.onnx", config={"dataset": {"normalize": False}})      # xbar's own graph executor
    y = net(x)                                                                  # torch tensor in, torch tensor out
    analog = xbar.convert_to_analog(net, config={"mapping": {"adc_bits": 5}}, calibration=x_train[:256])
    y_hw = analog(x)                                                            # the same batch on crossbars

A config is a YAML path or a dict of sections (as in the YAML files; docs/USER_GUIDE.md). A model
is an ONNX path, a weights file (.safetensors written by xbar), a (zoo name, weights) pair, or a
torch.nn.Module with an example input, exported to ONNX in memory. Stages run in this process on
the same C++ code as the xbar command and return their result file as a dict, with "run_dir" added:
the folder of everything the stage wrote (a new temporary folder unless out= is given; it stays
for the caller to read or remove, except after a failure, when nothing in it is a result and it is
removed). Failures raise xbar.Error with .exit_code as the command line's. Tensors cross by
DLPack, without copies.
"""
import io
import json
import os
import shutil
import tempfile
import weakref

from . import _xbar

Error = _xbar.Error
__version__ = _xbar.version()
__all__ = ["Error", "train", "eval", "compress", "simulate", "faults", "estimate", "run", "load",
           "convert_to_analog", "Model", "AnalogModel", "supported_onnx_ops"]


def supported_onnx_ops():
    """The ONNX ops xbar's importer executes."""
    return list(_xbar.supported_onnx_ops())


def _torch():
    import torch  # noqa: deferred so that `import xbar` works for stage calls without torch loaded
    return torch


def _to_dlpack(x):
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    return torch.utils.dlpack.to_dlpack(x.detach().contiguous())


def _from_dlpack(capsule):
    return _torch().utils.dlpack.from_dlpack(capsule)


def _config_path(config, folder):
    if config is None:
        config = {}
    if isinstance(config, (str, os.PathLike)):
        return os.fspath(config)
    if not isinstance(config, dict):
        raise TypeError("config: expected a YAML path or a dict of sections")
    path = os.path.join(folder, "config.yaml")
    with open(path, "w") as f:  # JSON is YAML
        json.dump(config, f, indent=1)
    return path


def _sets(overrides):
    out = []
    for key, value in (overrides or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        out.append(f"{key}={value}")
    return out


def _model_args(model, example_input, folder, weights=None):
    """(--set entries, weights path or None) for a model argument."""
    sets = []
    if model is None:
        pass
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.lower().endswith(".onnx"):
            sets.append(f"model.onnx={path}")
        else:
            weights = weights or path
    elif isinstance(model, tuple) and len(model) == 2:
        sets.append(f"model.name={model[0]}")
        weights = weights or os.fspath(model[1])
    elif isinstance(model, Model):
        info = model.info
        if info["architecture"] == "onnx":
            sets.append(f"model.onnx={info['onnx']}")
        weights = weights or info["source"]
    else:
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError("model: expected an ONNX path, a weights path, (zoo name, weights), an xbar.Model "
                            "or a torch.nn.Module")
        if example_input is None:
            raise ValueError("model: a torch.nn.Module needs example_input (one batch of the input shape)")
        buf = io.BytesIO()
        was_training = model.training
        model.eval()
        torch.onnx.export(model, example_input, buf, opset_version=13, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
        model.train(was_training)
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        sets.append(f"model.onnx={path}")
    return sets, weights


_RESULT = {"train": "train.json", "eval": "eval.json", "compress": "compress.json", "simulate": "simulate.json",
           "faults": "faults.json", "estimate": "estimate.json", "run": "results.json"}


def _stage(command, config, model, example_input, out, overrides, weights=None, extra=()):
    folder = os.fspath(out) if out is not None else tempfile.mkdtemp(prefix=f"xbar-{command}-")
    os.makedirs(folder, exist_ok=True)
    try:
        cfg = _config_path(config, folder)
        sets, weights = _model_args(model, example_input, folder, weights)
        args = [command, "-c", cfg, "-o", folder]
        if weights is not None:
            args += ["--weights", weights]
        for s in sets + _sets(overrides):
            args += ["--set", s]
        args += list(extra)
        _xbar.run(args)
    except BaseException:
        if out is None:  # a run folder of our own that holds no result: do not leave it behind
            shutil.rmtree(folder, True)
        raise
    with open(os.path.join(folder, _RESULT[command])) as f:
        result = json.load(f)
    result["run_dir"] = folder
    return result


def train(config=None, model=None, example_input=None, out=None, set=None, resume=False):
    """Trains the configured zoo model, or fine-tunes an ONNX/torch model from its weights."""
    return _stage("train", config, model, example_input, out, set, extra=["--resume"] if resume else ())


def eval(config=None, model=None, example_input=None, out=None, set=None, weights=None):  # noqa: A001
    """Test accuracy of a model on the configured dataset."""
    return _stage("eval", config, model, example_input, out, set, weights)


def compress(config=None, model=None, example_input=None, out=None, set=None, weights=None):
    """ADMM compression under crossbar constraints; an ONNX model is also written back as run_dir/model.onnx."""
    return _stage("compress", config, model, example_input, out, set, weights)


def simulate(config=None, model=None, example_input=None, out=None, set=None, weights=None):
    """Bit-accurate crossbar inference on the configured test set."""
    return _stage("simulate", config, model, example_input, out, set, weights)


def faults(config=None, model=None, example_input=None, out=None, set=None, weights=None):
    """Monte Carlo fault campaign (faults.*)."""
    return _stage("faults", config, model, example_input, out, set, weights)


def estimate(config=None, model=None, example_input=None, out=None, set=None, weights=None, preset=None):
    """Area, power, energy and throughput of the model on the configured chip."""
    extra = ["--preset", preset] if preset else ()
    return _stage("estimate", config, model, example_input, out, set, weights, extra)


def run(config=None, model=None, example_input=None, out=None, set=None, weights=None):
    """The whole pipeline (xbar run): results.json as a dict; the report is run_dir/report.html."""
    return _stage("run", config, model, example_input, out, set, weights)


class Model:
    """A network as xbar's stages see it: call it on a torch batch (normalised as the model expects)."""

    def __init__(self, model, config=None, example_input=None, weights=None, set=None):
        self._folder = tempfile.mkdtemp(prefix="xbar-model-")
        weakref.finalize(self, shutil.rmtree, self._folder, True)  # the config (and export) it was built from
        cfg = _config_path(config, self._folder)
        sets, weights = _model_args(model, example_input, self._folder, weights)
        if weights is None:
            weights = ""
        self._config, self._sets = cfg, sets + _sets(set)
        self._m = _xbar.Model(cfg, self._sets, weights)
        self.info = dict(self._m.info())

    def __call__(self, x):
        return _from_dlpack(self._m.forward(_to_dlpack(x)))

    forward = __call__

    @property
    def layers(self):
        """Conv/linear layers in forward order, with their crossbar (GEMM) shapes."""
        return list(self._m.layers())

    def channel_spaces(self):
        """The channel spaces unused-path removal walks: writers (layer, batch norm), readers (layer, rows
        per channel) and passes (target space, channel offset)."""
        return list(self._m.channel_spaces())

    def state_dict(self):
        """Parameters and buffers as torch tensors sharing memory with the model."""
        return {k: _from_dlpack(v) for k, v in self._m.state_dict().items()}

    def save_onnx(self, path):
        """Writes an ONNX-imported model's graph with its current weights."""
        self._m.save_onnx(os.fspath(path))


def load(model, config=None, example_input=None, weights=None, set=None):
    """An xbar.Model from an ONNX path, weights file, (zoo name, weights) or torch.nn.Module + example_input."""
    return Model(model, config, example_input, weights, set)


class AnalogModel:
    """A model on crossbars (mapping.*, device.*, faults.* of the config): call it on a torch batch."""

    def __init__(self, model, config=None, calibration=None, set=None):
        if calibration is None:
            raise ValueError("calibration: a batch of inputs (e.g. training images) that sets the input ranges")
        self.model = model
        folder = tempfile.mkdtemp(prefix="xbar-analog-")
        cfg = _config_path(config, folder)
        try:
            self._a = _xbar.Analog(model._m, cfg, model._sets + _sets(set), _to_dlpack(calibration.float()))
        finally:
            shutil.rmtree(folder, True)

    def __call__(self, x, mode="crossbar"):
        """mode: crossbar (every configured non-ideality), reference (ideal quantised crossbar) or float."""
        return _from_dlpack(self._a.forward(_to_dlpack(x.float()), mode))

    @property
    def crossbars(self):
        return self._a.crossbars()


def convert_to_analog(model, config=None, calibration=None, example_input=None, set=None):
    """The model (anything load() takes) mapped onto the config's crossbars, as a callable."""
    if not isinstance(model, Model):
        model = Model(model, config, example_input, set=set)
    return AnalogModel(model, config, calibration, set)
