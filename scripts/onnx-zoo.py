#!/usr/bin/env python3
"""Which of torchvision's image classifiers xbar imports from ONNX, and how exactly.

Each model (random weights, seed 0) is exported with PyTorch's exporter (opset 13 or --opset,
dynamic batch) to DIR/NAME[-opsetN].onnx (kept and reused), loaded with `xbar.load` and run on two random images; the
table gives the layers xbar maps onto crossbars, the largest error relative to PyTorch's output,
or the one-line error for a graph xbar does not run. docs/MODELS.md holds the result.

  PYTHONPATH=build/python /usr/bin/python3 scripts/onnx-zoo.py [--dir DIR] [--opset N] [NAME ...]
"""
import argparse
import os
import sys
import warnings

import onnx
import torch
import torchvision

import xbar

DEFAULT = ["alexnet", "vgg11_bn", "resnet18", "resnext50_32x4d", "wide_resnet50_2", "googlenet", "inception_v3",
           "densenet121", "squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5", "mobilenet_v2",
           "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "efficientnet_b0", "efficientnet_v2_s",
           "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "swin_t", "vit_b_16"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/onnx-zoo", help="where the exports go (default /tmp/onnx-zoo)")
    ap.add_argument("--opset", type=int, default=13, help="ONNX opset of the exports (default 13; PyTorch 1.13: 7-17)")
    ap.add_argument("names", nargs="*", default=DEFAULT, help="torchvision model names")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    print("| model | ops in the export | crossbar layers | max. error vs PyTorch (relative) |")
    print("|---|---|---|---|")
    failed = 0
    for name in args.names:
        torch.manual_seed(0)
        kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        m = getattr(torchvision.models, name)(**kw).eval()
        size = 299 if name == "inception_v3" else 224
        path = os.path.join(args.dir, f"{name}.onnx" if args.opset == 13 else f"{name}-opset{args.opset}.onnx")
        if not os.path.exists(path):
            torch.onnx.export(m, torch.randn(1, 3, size, size), path, opset_version=args.opset, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
        ops = len({n.op_type for n in onnx.load(path).graph.node})
        try:
            net = xbar.load(path, config={"dataset": {"normalize": False}})
            x = torch.randn(2, 3, size, size)
            with torch.no_grad():
                want = m(x)
            err = ((net(x) - want).abs().max() / want.abs().max()).item()
            print(f"| {name} | {ops} | {len(net.layers)} | {err:.1e} |", flush=True)
        except xbar.Error as e:
            failed += 1
            msg = str(e).replace(path + ": ", "").replace("|", "/")
            print(f"| {name} | {ops} | not imported | {msg[:160]} |", flush=True)
    print(f"\n{len(args.names) - failed} of {len(args.names)} imported")


if __name__ == "__main__":
    sys.exit(main())
