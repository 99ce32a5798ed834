"""A network trained in PyTorch through xbar and back, and the Python module's stages and tensors."""
import os

import onnx
import onnx.numpy_helper
import pytest
import torch

import xbar
from conftest import LeNet5, export

TEST_N = 2000


@pytest.fixture(scope="module")
def trained(fmnist, tmp_path_factory):
    """A LeNet-5 trained in PyTorch on raw [0, 1] pixels (one epoch on 12,000 images), exported to ONNX."""
    tx, ty, vx, vy = fmnist
    torch.manual_seed(0)
    m = LeNet5()
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for i in range(0, 12000, 64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(tx[i:i + 64]), ty[i:i + 64]).backward()
        opt.step()
    d = tmp_path_factory.mktemp("trained")
    path = str(d / "lenet.onnx")
    export(m, torch.randn(1, 1, 28, 28), path)
    return m, path, d


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


CONFIG = {"dataset": {"normalize": False, "test_subset": TEST_N, "train_subset": 6000}}


def test_pytorch_lenet_same_accuracy_in_xbar_after_compress_and_simulate(trained, fmnist):
    m, path, d = trained
    _, _, vx, vy = fmnist
    vx, vy = vx[:TEST_N], vy[:TEST_N]
    torch_acc = accuracy(m, vx, vy)
    assert torch_acc > 0.7
    ev = xbar.eval(CONFIG, model=path, out=d / "eval")
    assert abs(ev["test_accuracy"] - torch_acc) <= 1.0 / TEST_N, (ev["test_accuracy"], torch_acc)

    # Without the normalisation in the file or the config, xbar refuses instead of guessing.
    with pytest.raises(xbar.Error) as e:
        xbar.eval({"dataset": {"test_subset": 100}}, model=path)
    assert e.value.exit_code == 3 and "dataset.normalize: false" in str(e.value)

    # Compress: the weights come back as ONNX that PyTorch loads into its own module.
    comp = xbar.compress({**CONFIG, "compress": {"sparsity": 0.6, "admm_rounds": 1, "epochs_per_round": 1,
                                                 "retrain_epochs": 1, "quantize_bits": 0}},
                         model=path, out=d / "compress")
    out_onnx = d / "compress" / "model.onnx"
    g = onnx.load(str(out_onnx))
    onnx.checker.check_model(g)
    assert {p.key for p in g.metadata_props} >= {"normalize_mean", "normalize_std", "dataset"}
    state = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in g.graph.initializer}
    back = LeNet5()
    back.load_state_dict(state, strict=True)
    kept = sum((state[n + ".weight"] != 0).sum().item() for n in ("conv1", "conv2", "fc1", "fc2", "fc3"))
    assert kept == comp["weights_nonzero"]
    torch_comp = accuracy(back, vx, vy)
    ev2 = xbar.eval(CONFIG, model=str(out_onnx))
    assert abs(ev2["test_accuracy"] - torch_comp) <= 1.0 / TEST_N, (ev2["test_accuracy"], torch_comp)
    assert abs(comp["accuracy_compressed"] - torch_comp) <= 1.0 / TEST_N

    # Simulate the compressed network on lossless crossbars: the ideal crossbar is exact.
    sim = xbar.simulate({**CONFIG, "mapping": {"adc_bits": 0, "weight_bits": 8}}, model=str(out_onnx))
    print(f"\nPyTorch-trained LeNet-5 on {TEST_N} test images: PyTorch {torch_acc:.4f}, xbar eval "
          f"{ev['test_accuracy']:.4f}; compressed to {comp['weights_nonzero']} weights: PyTorch {torch_comp:.4f}, "
          f"xbar eval {ev2['test_accuracy']:.4f}, simulated (lossless, 8-bit) {sim['accuracy']:.4f}")
    assert abs(sim["accuracy_reference"] - torch_comp) <= 1.0 / TEST_N
    assert sim["accuracy"] == sim["accuracy_quantized"]


def test_module_in_memory_estimate_and_simulate():
    torch.manual_seed(0)
    est = xbar.estimate({"dataset": {"normalize": False}}, model=LeNet5(), example_input=torch.randn(1, 1, 28, 28))
    assert [l["name"] for l in est["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert (est["run_dir"] and est["model"]["weights_total"] == 150 + 2400 + 48000 + 10080 + 840)


def test_tensors_shared_not_copied(trained):
    m, path, _ = trained
    net = xbar.load(path, config={"dataset": {"normalize": False}})
    x = torch.rand(4, 1, 28, 28)
    y0 = net(x)
    with torch.no_grad():
        y_torch = m(x)
    assert torch.allclose(y0, y_torch, rtol=1e-5, atol=1e-5)
    sd = net.state_dict()
    sd["fc3.bias"].add_(1.0)  # writes into the model's own parameter
    assert torch.allclose(net(x), y0 + 1.0, atol=1e-5)


def test_convert_to_analog(trained, fmnist):
    _, path, _ = trained
    tx, _, vx, _ = fmnist
    lossless = {"dataset": {"normalize": False}, "mapping": {"adc_bits": 0, "weight_bits": 8, "input_bits": 8}}
    analog = xbar.convert_to_analog(path, config=lossless, calibration=tx[:256])
    x = vx[:32]
    exact = analog(x, mode="reference")
    assert torch.equal(analog(x), exact)  # a lossless crossbar is the ideal quantised one, bit for bit
    assert (analog(x, mode="float").argmax(1) == exact.argmax(1)).float().mean() > 0.9
    coarse = xbar.convert_to_analog(path, config={**lossless, "mapping": {"adc_bits": 3, "weight_bits": 8}},
                                    calibration=tx[:256])
    assert not torch.equal(coarse(x), exact) and coarse.crossbars == analog.crossbars


def test_errors_are_exceptions_with_exit_codes(tmp_path, temporary_run_folders):
    before = set(os.listdir(temporary_run_folders))
    with pytest.raises(xbar.Error) as e:
        xbar.simulate({"dataset": {"normalize": False}}, model=str(tmp_path / "missing.onnx"))
    assert e.value.exit_code == 3 and "missing.onnx" in str(e.value)
    with pytest.raises(xbar.Error) as e:
        xbar.estimate({"mapping": {"no_such_key": 1}})
    assert e.value.exit_code == 2 and "mapping.no_such_key" in str(e.value)
    # A failed stage removes the temporary run folder it made (nothing in it is a result) ...
    assert set(os.listdir(temporary_run_folders)) == before
    # ... but never a folder the caller named.
    with pytest.raises(xbar.Error):
        xbar.estimate({"mapping": {"no_such_key": 1}}, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "config.yaml").exists()


def test_train_fine_tunes_an_onnx_network(trained, tmp_path):
    _, path, _ = trained
    res = xbar.train({"dataset": {"normalize": False, "train_subset": 3000, "test_subset": 500},
                      "train": {"epochs": 1, "lr": 1e-4}}, model=path, out=tmp_path / "ft")
    assert res["model"] == path and res["test_accuracy"] > 0.7  # started from the trained weights
    again = xbar.eval({"dataset": {"normalize": False, "test_subset": 500}}, model=str(tmp_path / "ft" / "model.onnx"))
    via_weights = xbar.eval({"dataset": {"normalize": False, "test_subset": 500}}, model=path,
                            weights=str(tmp_path / "ft" / "model.safetensors"))
    assert again["test_accuracy"] == via_weights["test_accuracy"] == res["test_accuracy"]
