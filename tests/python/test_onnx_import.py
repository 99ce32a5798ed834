"""ONNX import on real exports made here: xbar's forward equals PyTorch's, layers carry PyTorch's
names, channel spaces follow the graph, unsupported ops get one clear line, and the cost model
prices an ImageNet ResNet-18."""
import json
import os

import onnx
import pytest
import torch
import torchvision

import xbar
from conftest import LeNet5, export, rel_err, run_xbar

RAW = {"dataset": {"normalize": False}}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def check_forward(model, shape, path, batch=2, tol=1e-5):
    torch.manual_seed(1)
    model.eval()
    export(model, torch.randn(1, *shape), str(path))
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        want = model(x)
    net = xbar.load(str(path), config=RAW)
    got = net(x)
    assert got.shape == want.shape
    err = rel_err(got, want)
    assert err < tol, f"{path.name}: relative error {err:.3g}"
    return net


def conv_linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def test_lenet5_forward_and_names(tmp):
    torch.manual_seed(0)
    m = LeNet5()
    net = check_forward(m, (1, 28, 28), tmp / "lenet.onnx", batch=5)
    assert [l["name"] for l in net.layers] == conv_linear_names(m)
    assert net.info["input_shape"] == (1, 28, 28) and net.info["num_classes"] == 10
    # conv1 -> relu -> pool -> conv2 -> relu -> pool -> view -> fc1 -> relu -> fc2 -> relu -> fc3
    spaces = net.channel_spaces()
    assert [(s["name"], s["channels"], s["readers"]) for s in spaces] == [
        ("conv1", 6, [("conv2", 25)]), ("conv2", 16, [("fc1", 25)]), ("fc1", 120, [("fc2", 1)]),
        ("fc2", 84, [("fc3", 1)])]


def test_resnet18_imagenet_forward_names_spaces(tmp):
    torch.manual_seed(0)
    m = torchvision.models.resnet18()
    net = check_forward(m, (3, 224, 224), tmp / "resnet18.onnx")
    # Batch norm is folded into the convolutions by the exporter; the node scopes still name the layers.
    assert [l["name"] for l in net.layers] == conv_linear_names(m)
    spaces = {s["name"]: s for s in net.channel_spaces()}
    stem = spaces["conv1"]  # the stem and layer1's residual stream are one channel space
    assert sorted(w for w, _ in stem["writers"]) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert sorted(r for r, _ in stem["readers"]) == ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                                     "layer2.0.downsample.0"]
    last = [s for s in spaces.values() if ("fc", 1) in s["readers"]]
    assert len(last) == 1 and last[0]["channels"] == 512
    assert len(spaces) == 4 + 8  # four residual streams and one space inside each block


def test_mobilenet_v2_depthwise_forward(tmp):
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2()
    net = check_forward(m, (3, 224, 224), tmp / "mobilenet_v2.onnx")
    groups = [l["groups"] for l in net.layers]
    assert max(groups) > 1 and len(net.layers) == len(conv_linear_names(m))


class OpZoo(torch.nn.Module):
    """The other ops of the importer: grouped, dilated, strided and asymmetrically padded convs,
    batch norm kept as a node, pools with padding / ceil mode, concat, elementwise ops, MatMul."""

    def __init__(self):
        super().__init__()
        self.pad = torch.nn.ZeroPad2d((1, 0, 1, 0))
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.conv3 = torch.nn.Conv2d(8, 8, 1, bias=False)
        self.pool = torch.nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.mpool = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.fc = torch.nn.Linear(16 * 6 * 6, 20)
        self.w = torch.nn.Parameter(torch.randn(20, 10) * 0.1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.bn1(self.conv1(self.pad(x))), 0.1)
        a = torch.nn.functional.relu6(self.conv2(x))
        b = torch.sigmoid(self.conv3(x)) * 2.0 - torch.tanh(x) / 3.0
        x = torch.cat([self.pool(a), self.mpool(b)], dim=1)
        x = torch.flatten(x, 1)
        x = self.drop(torch.relu(self.fc(x)))
        return torch.softmax(x @ self.w, dim=1)


def test_op_zoo_forward_and_batch_norm_nodes(tmp):
    torch.manual_seed(0)
    m = OpZoo()
    m.train()
    with torch.no_grad():
        m(torch.randn(16, 3, 20, 20))  # move the batch-norm statistics off their defaults
    m.eval()
    path = tmp / "opzoo.onnx"
    export(m, torch.randn(1, 3, 20, 20), str(path), training=torch.onnx.TrainingMode.PRESERVE,
           do_constant_folding=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "BatchNormalization", "Pad", "AveragePool", "MaxPool", "Concat", "MatMul", "Gemm",
            "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Softmax"} <= ops, ops
    x = torch.randn(3, 3, 20, 20)
    with torch.no_grad():
        want = m(x)
    net = xbar.load(str(path), config=RAW)
    assert rel_err(net(x), want) < 1e-5
    names = [l["name"] for l in net.layers]
    assert names == ["conv1", "conv2", "conv3", "fc", "w"] or names[:4] == ["conv1", "conv2", "conv3", "fc"], names
    assert "bn1.running_mean" in net.state_dict()


def test_unsupported_op_is_one_line(tmp):
    class Gelu(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            return torch.nn.functional.gelu(self.fc(torch.flatten(x, 1)))

    path = export(Gelu(), torch.randn(1, 1, 28, 28), str(tmp / "gelu.onnx"))
    with pytest.raises(xbar.Error) as e:
        xbar.load(path, config=RAW)
    msg = str(e.value)
    assert "\n" not in msg and "op Erf is not supported" in msg and "node '" in msg
    assert "supported ops: Add, AveragePool" in msg and e.value.exit_code == 3
    r = run_xbar("inspect", path, check=False)
    assert r.returncode == 3 and "Erf" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_resnet18_estimate_and_inspect(tmp):
    path = tmp / "resnet18.onnx"
    if not path.exists():
        export(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), str(path))
    cfg = tmp / "r18.yaml"
    cfg.write_text(f"name: r18\nmodel:\n  onnx: {path}\n")
    run_xbar("estimate", "-c", str(cfg), "-o", str(tmp / "est"))
    est = json.loads((tmp / "est" / "estimate.json").read_text())
    layers = est["layers"]
    assert len(layers) == 21 and layers[0]["name"] == "conv1" and layers[-1]["name"] == "fc"
    assert est["model"]["weights_total"] == sum(p.numel() for n, p in torchvision.models.resnet18().named_parameters()
                                                if n.endswith("weight") and p.dim() in (2, 4))
    r = run_xbar("inspect", str(path), "--json")
    info = json.loads(r.stdout)
    assert len(info["layers"]) == 21


def test_model_flag_and_weights_file_that_is_onnx(tmp):
    path = str(tmp / "lenet.onnx")
    if not os.path.exists(path):
        export(LeNet5(), torch.randn(1, 1, 28, 28), path)
    cfg = tmp / "plain.yaml"
    cfg.write_text("name: plain\ndataset:\n  normalize: false\n  test_subset: 200\n")
    a = run_xbar("eval", "-c", str(cfg), "--model", path)
    b = run_xbar("eval", "-c", str(cfg), "--weights", path)
    assert a.stdout == b.stdout and "test accuracy" in a.stdout
