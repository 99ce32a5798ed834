"""No silent mismatches: the model files users bring are recognised, mapped or refused in one line."""
import os
import sys

import pytest
import torch
import torchvision

from conftest import run_xbar

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from xbar_models import create_model, read_safetensors, write_safetensors  # noqa: E402


@pytest.fixture
def cfg(tmp_path):
    def make(text=""):
        p = tmp_path / "exp.yaml"
        p.write_text("name: files\ndataset:\n  test_subset: 200\n" + text)
        return str(p)
    return make


def lenet_state(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=num_classes).state_dict()


def one_line_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_torch_save_files_are_recognised(tmp_path, cfg):
    zip_file, pickle_file = str(tmp_path / "m.pt"), str(tmp_path / "m_legacy.pt")
    torch.save(lenet_state(), zip_file)
    torch.save(lenet_state(), pickle_file, _use_new_zipfile_serialization=False)
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", zip_file, check=False), 3, "torch.save (zip) archive",
                   "torch.onnx.export", "docs/MODELS.md")
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", pickle_file, check=False), 3, "Python pickle")
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", str(tmp_path), check=False), 3, "is a directory")


def test_normalisation_is_explicit(tmp_path, cfg):
    bare = str(tmp_path / "bare.safetensors")
    write_safetensors(bare, lenet_state(), {"format": "pt"})
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", bare, check=False), 3, "has no input normalisation",
                   "dataset.normalize: false", "dataset.mean")
    raw = run_xbar("eval", "-c", cfg("  normalize: false\n"), "--weights", bare)
    same = run_xbar("eval", "-c", cfg("  mean: [0]\n  std: [1]\n"), "--weights", bare)
    assert raw.stdout == same.stdout
    other = run_xbar("eval", "-c", cfg("  mean: [0.5]\n  std: [0.25]\n"), "--weights", bare)
    assert other.stdout != raw.stdout
    one_line_error(run_xbar("eval", "-c", cfg("  mean: [0.5, 0.5]\n  std: [0.25, 0.25]\n"), "--weights", bare,
                            check=False), 2, "dataset.mean/dataset.std: 2 values", "1 channel")


def test_ddp_prefix_and_torchvision_names_are_mapped(tmp_path, cfg):
    plain, ddp = str(tmp_path / "plain.safetensors"), str(tmp_path / "ddp.safetensors")
    state = lenet_state()
    write_safetensors(plain, state, {"format": "pt"})
    write_safetensors(ddp, {"module." + k: v for k, v in state.items()}, {"format": "pt"})
    c = cfg("  normalize: false\n")
    a = run_xbar("eval", "-c", c, "--weights", plain)
    b = run_xbar("eval", "-c", c, "--weights", ddp)
    assert a.stdout == b.stdout and "stripped the DataParallel 'module.' prefix" in b.stderr

    torch.manual_seed(0)
    res = create_model("resnet18", width=0.125).state_dict()
    tv = {k.replace(".shortcut.", ".downsample.").replace("linear.", "fc.", 1) if k.startswith("linear.") or
          ".shortcut." in k else k: v for k, v in res.items()}
    assert any(".downsample." in k for k in tv) and "fc.weight" in tv
    p1, p2 = str(tmp_path / "ours.safetensors"), str(tmp_path / "tv.safetensors")
    write_safetensors(p1, res, {"format": "pt"})
    write_safetensors(p2, tv, {"format": "pt"})
    c = cfg("  normalize: false\nmodel:\n  name: resnet18\n  width: 0.125\n")
    a = run_xbar("eval", "-c", c, "--weights", p1)
    b = run_xbar("eval", "-c", c, "--weights", p2)
    assert a.stdout == b.stdout and "mapped torchvision tensor names" in b.stderr

    # A real torchvision ResNet-18 is the ImageNet network, not the zoo's CIFAR one: named in one line.
    real = str(tmp_path / "torchvision.safetensors")
    write_safetensors(real, torchvision.models.resnet18().state_dict(), {"format": "pt"})
    one_line_error(run_xbar("eval", "-c", cfg("  normalize: false\nmodel:\n  name: resnet18\n"), "--weights", real,
                            check=False), 3, "'conv1.weight' has shape [64, 3, 7, 7]", "imported as ONNX")


def test_metadata_is_checked(tmp_path, cfg):
    partial = str(tmp_path / "partial.safetensors")
    write_safetensors(partial, lenet_state(), {"architecture": "lenet5"})
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", partial, check=False), 3,
                   "metadata lacks num_classes, input_shape")
    meta = {"architecture": "lenet5", "num_classes": "5", "input_shape": "[1, 28, 28]", "dataset": "fashion-mnist",
            "normalize_mean": "[0.0]", "normalize_std": "[1.0]"}
    five = str(tmp_path / "five.safetensors")
    write_safetensors(five, lenet_state(num_classes=5), meta)
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", five, check=False), 3,
                   "model has 5 classes but fashion-mnist has 10")
    huge = str(tmp_path / "huge.safetensors")
    write_safetensors(huge, lenet_state(), {**meta, "num_classes": "1000000000"})
    one_line_error(run_xbar("eval", "-c", cfg(), "--weights", huge, check=False), 3,
                   "metadata num_classes 1000000000 is outside [1, 1000000]")
    digits = str(tmp_path / "digits.safetensors")
    write_safetensors(digits, lenet_state(), {**meta, "num_classes": "10", "dataset": "mnist"})
    r = run_xbar("eval", "-c", cfg(), "--weights", digits)
    assert "warning" in r.stderr and "trained on mnist; evaluating it on fashion-mnist" in r.stderr


def test_lenet_files_do_not_claim_batch_norm(tmp_path, cfg):
    run_xbar("train", "-c", cfg("  train_subset: 300\ntrain:\n  epochs: 1\n"), "-o", str(tmp_path / "run"))
    _, meta = read_safetensors(str(tmp_path / "run" / "model.safetensors"))
    assert meta["batch_norm"] == "false" and meta["architecture"] == "lenet5"
