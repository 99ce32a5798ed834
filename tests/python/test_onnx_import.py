"""ONNX import on real exports made here: xbar's forward equals PyTorch's, layers carry PyTorch's
names, channel spaces follow the graph, unsupported ops get one clear line, and the cost model
prices an ImageNet ResNet-18."""
import json
import os

import onnx
from onnx import numpy_helper
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


def test_mobilenet_v3_hard_activations(tmp):
    """MobileNetV3's HardSigmoid (squeeze-excitation) and HardSwish: opset 13 exports HardSwish as
    HardSigmoid and Mul, opset 14 as HardSwish."""
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small()
    for opset, op in ((13, "HardSigmoid"), (14, "HardSwish")):
        path = tmp / f"mobilenet_v3_small-{opset}.onnx"
        export(m, torch.randn(1, 3, 224, 224), str(path), opset_version=opset)
        assert op in {n.op_type for n in onnx.load(str(path)).graph.node}
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            want = m(x)
        net = xbar.load(str(path), config=RAW)
        assert rel_err(net(x), want) < 1e-5, opset
        assert [l["name"] for l in net.layers] == conv_linear_names(m)


class TinyConvNeXt(torch.nn.Module):
    """ConvNeXt's structure at toy size (torchvision's own CNBlock and LayerNorm2d): depthwise 7x7
    convs, LayerNorm as ReduceMean/Pow/Sqrt, GELU as Erf, and Linear layers on channels-last tensors."""

    def __init__(self):
        super().__init__()
        from torchvision.models.convnext import CNBlock, LayerNorm2d
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, stride=4), LayerNorm2d(16))
        self.blocks = torch.nn.Sequential(CNBlock(16, 0.5, 0.0), CNBlock(16, 0.5, 0.0))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), LayerNorm2d(16), torch.nn.Flatten(1),
                                        torch.nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_convnext_linear_on_channels_last_runs_as_1x1_conv(tmp):
    torch.manual_seed(0)
    m = TinyConvNeXt().eval()
    path = tmp / "tiny_convnext.onnx"
    export(m, torch.randn(1, 3, 32, 32), str(path))
    assert {"MatMul", "Erf", "Pow", "Sqrt", "Transpose"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = m(x)
    net = xbar.load(str(path), config=RAW)
    assert rel_err(net(x), want) < 1e-5
    layers = {l["name"]: l for l in net.layers}
    assert list(layers) == conv_linear_names(m)
    for b in ("blocks.0.block.3", "blocks.0.block.5", "blocks.1.block.3", "blocks.1.block.5"):
        # nn.Linear on [N, H, W, C]: a 1x1 convolution over the H x W positions
        assert layers[b]["kind"] == "conv2d" and layers[b]["kernel"] == (1, 1), layers[b]
    assert layers["blocks.0.block.3"]["gemm_rows"] == 16 and layers["blocks.0.block.3"]["gemm_cols"] == 64
    assert layers["head.3"]["kind"] == "linear"
    # Written back to ONNX in the graph's own layout ([in, out] MatMul weights), and the same network
    sd = net.state_dict()
    with torch.no_grad():
        sd["blocks.1.block.5.weight"].mul_(0.5)
        m.blocks[1].block[5].weight.mul_(0.5)
        want = m(x)
    out = tmp / "tiny_convnext_back.onnx"
    net.save_onnx(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    assert torch.equal(torch.from_numpy(inits["blocks.1.block.5.weight"].copy()), m.blocks[1].block[5].weight.detach().t())
    back = xbar.load(str(out), config=RAW)
    assert rel_err(back(x), want) < 1e-5 and torch.equal(back(x), net(x))
    # On crossbars: a lossless crossbar is the ideal quantised network, bit for bit
    lossless = {"dataset": {"normalize": False}, "mapping": {"adc_bits": 0, "weight_bits": 8, "input_bits": 8}}
    analog = xbar.convert_to_analog(net, config=lossless, calibration=torch.randn(64, 3, 32, 32))
    exact = analog(x, mode="reference")
    assert torch.equal(analog(x), exact) and rel_err(exact, want) < 0.2
    # Priced with H x W = 8 x 8 positions per image for the channels-last layers
    cfg = tmp / "convnext.yaml"
    cfg.write_text(f"name: convnext\nmodel:\n  onnx: {path}\n")
    run_xbar("estimate", "-c", str(cfg), "-o", str(tmp / "est-convnext"))
    est = {l["name"]: l for l in json.loads((tmp / "est-convnext" / "estimate.json").read_text())["layers"]}
    assert est["blocks.0.block.3"]["positions"] == 64 and est["head.3"]["positions"] == 1
    # Opset 17 exports LayerNorm as one LayerNormalization node
    path17 = tmp / "tiny_convnext-17.onnx"
    export(m, torch.randn(1, 3, 32, 32), str(path17), opset_version=17)
    assert "LayerNormalization" in {n.op_type for n in onnx.load(str(path17)).graph.node}
    assert rel_err(xbar.load(str(path17), config=RAW)(x), want) < 1e-5


def test_unsupported_op_is_one_line(tmp):
    class Floor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            return torch.floor(self.fc(torch.flatten(x, 1)))

    path = export(Floor(), torch.randn(1, 1, 28, 28), str(tmp / "floor.onnx"))
    with pytest.raises(xbar.Error) as e:
        xbar.load(path, config=RAW)
    msg = str(e.value)
    assert "\n" not in msg and "op Floor is not supported" in msg and "node '" in msg
    assert "supported ops: Abs, Add, AveragePool" in msg and e.value.exit_code == 3
    r = run_xbar("inspect", path, check=False)
    assert r.returncode == 3 and "Floor" in r.stderr and len(r.stderr.strip().splitlines()) == 1


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
