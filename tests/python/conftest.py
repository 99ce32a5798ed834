"""Shared fixtures of the Python suite: xbar's module and executable from the build tree, real ONNX
exports made here with Debian's torch / torchvision, and Fashion-MNIST read from its Debian package."""
import gzip
import os
import struct
import subprocess
import tempfile

import numpy as np
import pytest
import torch

XBAR = os.environ.get("XBAR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "xbar"))
FMNIST = "/usr/share/datasets/fashion-mnist"

torch.set_num_threads(2)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="session", autouse=True)
def temporary_run_folders(tmp_path_factory):
    """Stages called without out= (as the user guide does) make their run folders under pytest's
    temporary tree, which pytest prunes, instead of leaving them in /tmp."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield tempfile.tempdir
    tempfile.tempdir = before


@pytest.fixture(scope="session")
def fmnist():
    """(train_x, train_y, test_x, test_y): raw [0, 1] pixels N x 1 x 28 x 28, int64 labels."""
    def images(name):
        return torch.from_numpy(read_idx(os.path.join(FMNIST, name)).copy()).float().div_(255).unsqueeze(1)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(FMNIST, name)).astype(np.int64))

    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


class LeNet5(torch.nn.Module):
    """A plain PyTorch LeNet-5 as users write it (x.view(x.size(0), -1) before the classifier)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.fc1 = torch.nn.Linear(400, 120)
        self.fc2 = torch.nn.Linear(120, 84)
        self.fc3 = torch.nn.Linear(84, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def export(model, example, path, **kw):
    model.eval()
    torch.onnx.export(model, example, path, opset_version=kw.pop("opset_version", 13), input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, **kw)
    return path


def run_xbar(*args, check=True):
    r = subprocess.run([XBAR, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"xbar {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()
