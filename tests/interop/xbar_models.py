"""PyTorch definitions of the xbar model zoo, parameter for parameter.

These are the modules whose state dicts xbar reads and writes (docs/MODELS.md). Use them to train in
PyTorch and evaluate, compress or simulate in xbar, or the other way round:

    from xbar_models import create_model
    model = create_model("vgg8", in_channels=1, input_size=28, width=0.25)
    model.load_state_dict(read_safetensors("runs/vgg8/model.safetensors"))

The safetensors helpers below follow the published format (8-byte little-endian header length, JSON
header, raw little-endian data) and need only numpy; the `safetensors` package reads the same files.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled(channels, width):
    """Channel count times the width multiplier, rounded half up, at least 1 (as xbar)."""
    return max(1, int(math.floor(channels * width + 0.5)))


class LeNet5(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, input_size=28):
        super().__init__()
        pad = 2 if input_size == 28 else 0
        s = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


VGG_CONFIGS = {
    # DNN+NeuroSim's VGG-8 (6 conv + FC 1024 + FC); kuangliu/pytorch-cifar's VGG-11 and VGG-16.
    "vgg8": ([128, 128, "M", 256, 256, "M", 512, 512, "M"], 1024),
    "vgg11": ([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], 0),
    "vgg16": ([64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"], 0),
}


class VGG(nn.Module):
    def __init__(self, name, in_channels=1, num_classes=10, input_size=28, width=1.0, batch_norm=True):
        super().__init__()
        cfg, hidden = VGG_CONFIGS[name]
        layers, c, s = [], in_channels, input_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                s = (s + 1) // 2
            else:
                out = scaled(v, width)
                layers.append(nn.Conv2d(c, out, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                c = out
        self.features = nn.Sequential(*layers)
        flat = c * s * s
        if hidden:
            h = scaled(hidden, width)
            self.classifier = nn.Sequential(nn.Linear(flat, h), nn.ReLU(inplace=True), nn.Linear(h, num_classes))
        else:
            self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, conv_shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.option_a = None
        if stride != 1 or in_planes != planes:
            if conv_shortcut:  # ResNet-18: 1x1 conv + BN
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            else:  # ResNet-20 option A: subsample, zero-pad the new channels
                lo = (planes - in_planes) // 2
                self.option_a = (stride, lo, planes - in_planes - lo)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "shortcut"):
            sc = self.shortcut(x)
        elif self.option_a is not None:
            s, lo, hi = self.option_a
            sc = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, hi))
        else:
            sc = x
        return F.relu(out + sc)


class ResNet(nn.Module):
    def __init__(self, name, in_channels=3, num_classes=10, width=1.0):
        super().__init__()
        planes, blocks, conv_sc = ([16, 32, 64], 3, False) if name == "resnet20" else ([64, 128, 256, 512], 2, True)
        first = scaled(planes[0], width)
        self.conv1 = nn.Conv2d(in_channels, first, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        c = first
        for i, p in enumerate(planes):
            out, stage = scaled(p, width), []
            for b in range(blocks):
                stage.append(BasicBlock(c, out, 2 if (i > 0 and b == 0) else 1, conv_sc))
                c = out
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.stages = len(planes)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def create_model(name, in_channels=1, num_classes=10, input_size=28, width=1.0, batch_norm=True):
    if name == "lenet5":
        return LeNet5(in_channels, num_classes, input_size)
    if name in VGG_CONFIGS:
        return VGG(name, in_channels, num_classes, input_size, width, batch_norm)
    if name in ("resnet20", "resnet18"):
        return ResNet(name, in_channels, num_classes, width)
    raise ValueError(f"unknown model {name}")


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + b:8 + n + e], dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    names = sorted(tensors)
    header, blobs, offset = {}, [], 0
    rev = {v: k for k, v in _DTYPES.items()}
    for name in names:
        arr = tensors[name].detach().cpu().contiguous().numpy()
        blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": rev[arr.dtype.type], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
