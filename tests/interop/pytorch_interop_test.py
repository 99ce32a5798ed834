#!/usr/bin/env python3
"""State dicts both ways between xbar and PyTorch (Debian's python3-torch).

1. xbar exports every zoo model (random weights, BN statistics moved off their defaults) with a
   reference input and output; PyTorch loads each with load_state_dict(strict=True) into the
   definitions of xbar_models.py and must reproduce the output.
2. PyTorch initialises its own models, writes their state dicts with only {"format": "pt"} as
   metadata, plus a reference input/output; xbar loads them strictly and must reproduce the output.
Exit 77 (ctest: skipped) when PyTorch is not installed.
"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("python3-torch is not installed; skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xbar_models import create_model, read_safetensors, write_safetensors  # noqa: E402

# Keep in sync with kCases in interop_helper.cc.
CASES = [("lenet5", 1, 28, 1.0), ("lenet5", 3, 32, 1.0), ("vgg8", 1, 28, 0.25), ("vgg11", 3, 32, 0.25),
         ("vgg16", 1, 28, 0.125), ("resnet20", 3, 32, 0.5), ("resnet18", 1, 28, 0.125)]


def main():
    helper = sys.argv[1]
    torch.set_num_threads(1)
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([helper, "export", d], check=True)
        for name, c, size, width in CASES:
            tag = f"{name}_{c}x{size}"
            state, meta = read_safetensors(f"{d}/{tag}.safetensors")
            assert meta["architecture"] == name, meta
            model = create_model(name, in_channels=c, input_size=size, width=width)
            model.load_state_dict(state, strict=True)
            model.eval()
            io, _ = read_safetensors(f"{d}/{tag}.io.safetensors")
            with torch.no_grad():
                out = model(io["input"])
            diff = (out - io["output"]).abs().max().item()
            ok = torch.allclose(out, io["output"], rtol=1e-4, atol=1e-5)
            print(f"{tag:16s} max |pytorch - xbar| = {diff:.3g} {'ok' if ok else 'MISMATCH'}")
            failures += 0 if ok else 1

        for i, (name, c, size, width) in enumerate(CASES):
            tag = f"{name}_{c}x{size}"
            torch.manual_seed(100 + i)
            model = create_model(name, in_channels=c, input_size=size, width=width)
            model.train()
            with torch.no_grad():
                model(torch.randn(8, c, size, size))  # move BN statistics
            model.eval()
            x = torch.randn(4, c, size, size)
            with torch.no_grad():
                y = model(x)
            write_safetensors(f"{d}/{tag}.pt.safetensors", model.state_dict(), {"format": "pt"})
            write_safetensors(f"{d}/{tag}.pt_io.safetensors", {"input": x, "output": y})
        failures += subprocess.run([helper, "check", d]).returncode
    print("interop:", "FAILED" if failures else "all models match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
