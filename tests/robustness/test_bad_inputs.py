"""The bad-input contract (docs/INTERFACE.md, docs/ROBUSTNESS.md), one case per row of the table in
docs/ROBUSTNESS.md: every bad input ends with exactly one `xbar: ...` line on stderr that names the
culprit, the documented exit code (2 usage or config, 3 data or model file), no signal, no stack
trace, and no output left behind (the run directory is not created, no temporary files).

    python3 tests/robustness/test_bad_inputs.py --table   # prints the table docs/ROBUSTNESS.md embeds
"""
import gzip
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
XBAR = os.environ.get("XBAR", os.path.join(ROOT, "build", "xbar"))
FMNIST = "/usr/share/datasets/fashion-mnist"
CFG = os.path.join(ROOT, "configs", "examples", "lenet5-train.yaml")
FAST = ["--set", "threads=1", "--set", "dataset.test_subset=20", "--set", "mapping.calibration_images=20"]


# ---- files the cases corrupt --------------------------------------------------------------------
def idx_bytes(type_code, dims, payload):
    return struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(">" + "I" * len(dims), *dims) + payload


def read_idx_gz(name):
    with gzip.open(os.path.join(FMNIST, name), "rb") as f:
        return f.read()


def small_idx(kind, n):
    """The first n images or labels of Fashion-MNIST's test set, as plain IDX bytes."""
    if kind == "images":
        raw = read_idx_gz("t10k-images-idx3-ubyte.gz")
        return idx_bytes(0x08, [n, 28, 28], raw[16:16 + n * 784])
    raw = read_idx_gz("t10k-labels-idx1-ubyte.gz")
    return idx_bytes(0x08, [n], raw[8:8 + n])


def data_dir(tmp, images=None, labels=None, train_labels=None, n=100):
    """A Fashion-MNIST-shaped directory: train and test sets of n images, optionally replaced."""
    d = os.path.join(tmp, "data")
    os.makedirs(d, exist_ok=True)
    for split in ("train", "t10k"):
        with open(os.path.join(d, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(small_idx("images", n))
        with open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(small_idx("labels", n))
    if images is not None:
        with open(os.path.join(d, "t10k-images-idx3-ubyte"), "wb") as f:
            f.write(images)
    if labels is not None:
        with open(os.path.join(d, "t10k-labels-idx1-ubyte"), "wb") as f:
            f.write(labels)
    if train_labels is not None:
        with open(os.path.join(d, "train-labels-idx1-ubyte"), "wb") as f:
            f.write(train_labels)
    return ["--set", "dataset.path=" + d]


def cifar_dir(tmp, record_bytes):
    d = os.path.join(tmp, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(record_bytes)
    return ["--set", "dataset.name=cifar10", "--set", "dataset.path=" + d]


def safetensors_parts(path):
    b = open(path, "rb").read()
    n, = struct.unpack("<Q", b[:8])
    return json.loads(b[8:8 + n]), b[8 + n:]


def write_safetensors(path, header, data):
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    return path


def poisoned(weights, tmp, value):
    """The trained weights with conv1.weight[0] set to value (NaN, inf)."""
    header, data = safetensors_parts(weights)
    o = header["conv1.weight"]["data_offsets"][0]
    data = data[:o] + struct.pack("<f", value) + data[o + 4:]
    return write_safetensors(os.path.join(tmp, "poisoned.safetensors"), header, data)


def with_metadata(weights, tmp, **kv):
    header, data = safetensors_parts(weights)
    header["__metadata__"].update({k: str(v) for k, v in kv.items()})
    return write_safetensors(os.path.join(tmp, "meta.safetensors"), header, data)


def text(tmp, name, content):
    p = os.path.join(tmp, name)
    with open(p, "w") as f:
        f.write(content)
    return p


def binary(tmp, name, content):
    p = os.path.join(tmp, name)
    with open(p, "wb") as f:
        f.write(content)
    return p


def onnx_with_op(tmp, op):
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 28, 28])
    g = helper.make_graph([helper.make_node(op, ["input"], ["output"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    p = os.path.join(tmp, f"{op.lower()}.onnx")
    onnx.save(m, p)
    return p


def simulate_with_map(content):
    """argv builder: simulate with a measured fault map holding `content`."""
    return lambda t: ["simulate", "-c", CFG, *FAST, "--weights", t.w, "--set", "faults.map=" + text(t.tmp, "fm.csv", content),
                      "-o", t.out]


# ---- the cases --------------------------------------------------------------------------------
# (area, what is wrong, exit code, text the one error line must contain, argv builder(t) where t
# holds tmp, out (the run directory that must not appear) and w (trained LeNet-5 weights)).
CASES = [
    # command line
    ("CLI usage", "no subcommand", 2, "A subcommand is required", lambda t: []),
    ("CLI usage", "unknown subcommand", 2, "bogus", lambda t: ["bogus"]),
    ("CLI usage", "unknown option", 2, "--frobnicate", lambda t: ["simulate", "-c", CFG, "--frobnicate"]),
    ("CLI usage", "`-c` missing", 2, "--config is required", lambda t: ["train"]),
    ("CLI usage", "`--weights` missing for simulate", 2, "--weights", lambda t: ["simulate", "-c", CFG, "-o", t.out]),
    ("CLI usage", "`-o` is an existing file", 2, "not a directory",
     lambda t: ["simulate", "-c", CFG, "--weights", t.w, "-o", text(t.tmp, "afile", "x"), *FAST]),
    ("CLI usage", "`inspect --crossbar 0x128`", 2, "--crossbar 0x128", lambda t: ["inspect", t.w, "--crossbar", "0x128"]),
    ("CLI usage", "`run --only` a stage not in run.stages", 2, "stage 'nope'",
     lambda t: ["run", "-c", CFG, "--only", "nope", "-o", t.out]),
    ("CLI usage", "`WORLD_SIZE=2` for a command that does not train", 2, "WORLD_SIZE=2",
     lambda t: ["simulate", "-c", CFG, "--weights", t.w, "-o", t.out]),
    # config files
    ("config", "`-c` file missing", 2, "nope.yaml: file not found", lambda t: ["train", "-c", os.path.join(t.tmp, "nope.yaml")]),
    ("config", "`-c` a directory", 2, "is a directory", lambda t: ["train", "-c", t.tmp, "-o", t.out]),
    ("config", "`-c /dev/zero` (a device)", 2, "/dev/zero: is a character device", lambda t: ["train", "-c", "/dev/zero", "-o", t.out]),
    ("config", "YAML syntax error", 2, "bad.yaml:3: YAML syntax error: end of sequence flow not found",
     lambda t: ["train", "-c", text(t.tmp, "bad.yaml", "train:\n  epochs: [1, 2\n"), "-o", t.out]),
    ("config", "random bytes", 2, "noise.yaml:",
     lambda t: ["train", "-c", binary(t.tmp, "noise.yaml", bytes(range(256)) * 8), "-o", t.out]),
    ("config", "100,000 nested brackets", 2, "deep.yaml",
     lambda t: ["train", "-c", text(t.tmp, "deep.yaml", "a: " + "[" * 100000 + "\n"), "-o", t.out]),
    ("config", "top level is a list", 2, "expected a mapping of sections",
     lambda t: ["train", "-c", text(t.tmp, "list.yaml", "- a\n- b\n"), "-o", t.out]),
    ("config", "duplicate section", 2, "dup.yaml:3: duplicate key 'train'",
     lambda t: ["train", "-c", text(t.tmp, "dup.yaml", "train:\n  epochs: 3\ntrain:\n  epochs: 4\n"), "-o", t.out]),
    ("config", "unknown key (typo)", 2, "unknown key 'train.epoch' (did you mean 'train.epochs'?)",
     lambda t: ["train", "-c", text(t.tmp, "typo.yaml", "train:\n  epoch: 3\n"), "-o", t.out]),
    ("config", "wrong type", 2, "train.lr: expected a number",
     lambda t: ["train", "-c", text(t.tmp, "type.yaml", "train:\n  lr: fast\n"), "-o", t.out]),
    ("config", "value out of range", 2, "train.batch_size: expected an integer in [1, 65536]",
     lambda t: ["train", "-c", text(t.tmp, "range.yaml", "train:\n  batch_size: -3\n"), "-o", t.out]),
    ("config", "bad enum value", 2, "mapping.scheme",
     lambda t: ["simulate", "-c", text(t.tmp, "enum.yaml", "mapping:\n  scheme: four-column\n"), "--weights", t.w, "-o", t.out]),
    ("config", "`torch_device: tpu`", 2, "torch_device: expected cpu, cuda or cuda:N",
     lambda t: ["train", "-c", CFG, "--set", "torch_device=tpu", "-o", t.out]),
    ("config", "CUDA asked for, no GPU visible", 2, "sees no CUDA device",
     lambda t: ["train", "-c", CFG, "--set", "torch_device=cuda", "-o", t.out]),
    # --set
    ("--set", "no `=`", 2, "--set train.epochs", lambda t: ["train", "-c", CFG, "--set", "train.epochs", "-o", t.out]),
    ("--set", "unknown key", 2, "unknown key 'mapping.rows'",
     lambda t: ["simulate", "-c", CFG, "--weights", t.w, "--set", "mapping.rows=1000000", "-o", t.out]),
    ("--set", "1e6 x 1e6 crossbar", 2, "mapping.crossbar_rows: expected an integer in [1, 65536]",
     lambda t: ["simulate", "-c", CFG, "--weights", t.w, "--set", "mapping.crossbar_rows=1000000", "-o", t.out]),
    ("--set", "malformed list", 2, "faults.rates",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.rates=[1e-3, x]", "-o", t.out]),
    # campaign grids
    ("campaign", "fault rates not increasing", 2, "faults.rates",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.rates=[1e-3, 1e-4]", "-o", t.out]),
    ("campaign", "1e9 Monte Carlo samples", 2, "faults.samples: expected an integer in [1, 1000000]",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.samples=1000000000", "-o", t.out]),
    ("campaign", "a campaign priced (by its first chip) over faults.max_hours", 2, "this campaign would take about",
     lambda t: ["faults", "-c", CFG, *FAST, "--weights", t.w, "--set", "faults.samples=1000000", "--set", "faults.max_hours=1",
                "-o", t.out]),
    ("campaign", "unknown scheme in faults.schemes", 2, "faults.schemes",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.schemes=[two-column, three-column]", "-o", t.out]),
    ("campaign", "swept key that is not numeric", 2, "faults.axis",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.axis=mapping.scheme",
                "--set", "faults.axis_values=[1, 2]", "-o", t.out]),
    ("campaign", "axis without values", 2, "faults.axis_values",
     lambda t: ["faults", "-c", CFG, "--weights", t.w, "--set", "faults.axis=device.variation_sigma", "-o", t.out]),
    # data: IDX
    ("data (IDX)", "data directory without the files", 3, "t10k-images-idx3-ubyte[.gz]: file not found",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, "--set", "dataset.path=" + t.tmp, "-o", t.out]),
    ("data (IDX)", "bad magic", 3, "not an IDX file: bad magic",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, *data_dir(t.tmp, images=b"\x12\x34\x56\x78" + bytes(100)), "-o", t.out]),
    ("data (IDX)", "truncated data", 3, "truncated IDX data",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, *data_dir(t.tmp, images=small_idx("images", 100)[:-5]), "-o", t.out]),
    ("data (IDX)", "trailing bytes", 3, "trailing bytes",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, *data_dir(t.tmp, images=small_idx("images", 100) + b"xx"), "-o", t.out]),
    ("data (IDX)", "dimensions whose product overflows 64 bits", 3, "describe more than 2^63 bytes",
     lambda t: ["eval", "-c", CFG, "--weights", t.w,
                *data_dir(t.tmp, images=idx_bytes(0x08, [2**32 - 1] * 3, bytes(64))), "-o", t.out]),
    ("data (IDX)", "a test label >= 10 (one byte changed)", 3, "label 200 at index 7 is out of range [0, 10)",
     lambda t: ["eval", "-c", CFG, "--weights", t.w,
                *data_dir(t.tmp, labels=small_idx("labels", 100)[:8 + 7] + b"\xc8" + small_idx("labels", 100)[8 + 8:]),
                "-o", t.out]),
    ("data (IDX)", "a training label >= 10, caught before the first epoch", 3, "train-labels-idx1-ubyte: label 200 at index 99",
     lambda t: ["train", "-c", CFG, *FAST, "--set", "train.epochs=1", "-o", t.out,
                *data_dir(t.tmp, train_labels=idx_bytes(0x08, [100], small_idx("labels", 99)[8:] + b"\xc8"))]),
    ("data (IDX)", "fewer labels than images", 3, "has 99 labels but",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, *data_dir(t.tmp, labels=small_idx("labels", 99)), "-o", t.out]),
    ("data (IDX)", "corrupt gzip", 3, "corrupt or truncated gzip data",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, "--set", "dataset.test_images=" + binary(
         t.tmp, "bad.gz", gzip.compress(small_idx("images", 100))[:-200]), "-o", t.out]),
    ("data (IDX)", "a directory where a data file belongs", 3, "is a directory",
     lambda t: ["eval", "-c", CFG, "--weights", t.w, "--set", "dataset.test_images=" + t.tmp, "-o", t.out]),
    # data: CIFAR
    ("data (CIFAR)", "file size not a multiple of the record", 3, "is not a positive multiple of the 3073-byte CIFAR-10 record",
     lambda t: ["train", "-c", CFG, *cifar_dir(t.tmp, bytes(3073 * 2 + 5)), "--set", "model.name=vgg8", "-o", t.out]),
    ("data (CIFAR)", "label 10 in CIFAR-10", 3, "label 10 in record 0 is out of range [0, 10)",
     lambda t: ["train", "-c", CFG, *cifar_dir(t.tmp, b"\x0a" + bytes(3072)), "--set", "model.name=vgg8", "-o", t.out]),
    # weights: safetensors
    ("weights", "missing file", 3, "none.safetensors", lambda t: ["eval", "-c", CFG, "--weights", os.path.join(t.tmp, "none.safetensors"), "-o", t.out]),
    ("weights", "a directory", 3, "is a directory; expected a file", lambda t: ["eval", "-c", CFG, "--weights", t.tmp, "-o", t.out]),
    ("weights", "truncated safetensors", 3, "not a valid safetensors file",
     lambda t: ["simulate", "-c", CFG, "--weights", binary(t.tmp, "trunc.safetensors", open(t.w, "rb").read()[:1000]), "-o", t.out]),
    ("weights", "header length of 2^60 bytes", 3, "not a valid safetensors file",
     lambda t: ["estimate", "-c", CFG, "--weights", binary(t.tmp, "huge.safetensors", struct.pack("<Q", 2**60) + b"{}"), "-o", t.out]),
    ("weights", "metadata `num_classes: 1000000000`", 3, "num_classes",
     lambda t: ["estimate", "-c", CFG, "--weights", with_metadata(t.w, t.tmp, num_classes=1000000000), "-o", t.out]),
    ("weights", "metadata `input_shape` of 1e6 x 1e6 pixels", 3, "input_shape",
     lambda t: ["estimate", "-c", CFG, "--weights", with_metadata(t.w, t.tmp, input_shape="[1, 1000000, 1000000]"), "-o", t.out]),
    ("weights", "NaN weight in `simulate`", 3, "conv1.weight has 1 NaN or infinite value",
     lambda t: ["simulate", "-c", CFG, *FAST, "--weights", poisoned(t.w, t.tmp, float("nan")), "-o", t.out]),
    ("weights", "infinite weight in `estimate`", 3, "conv1.weight has 1 NaN or infinite value",
     lambda t: ["estimate", "-c", CFG, "--weights", poisoned(t.w, t.tmp, float("inf")), "-o", t.out]),
    ("weights", "NaN weight in `compress`", 3, "conv1.weight has 1 NaN or infinite value",
     lambda t: ["compress", "-c", CFG, *FAST, "--weights", poisoned(t.w, t.tmp, float("nan")), "-o", t.out]),
    ("weights", "another architecture's file", 3, "holds a 'lenet5' model but",
     lambda t: ["eval", "-c", CFG, "--set", "model.name=vgg8", "--weights", t.w, "-o", t.out]),
    ("weights", "`inspect /dev/zero`", 3, "/dev/zero: is a character device", lambda t: ["inspect", "/dev/zero"]),
    # weights: ONNX
    ("weights (ONNX)", "truncated ONNX file", 3, "net.onnx",
     lambda t: ["estimate", "-c", CFG, "--model", binary(t.tmp, "net.onnx", open(onnx_with_op(t.tmp, "Relu"), "rb").read()[:40]),
                "-o", t.out]),
    ("weights (ONNX)", "an operator xbar does not map", 3, "Floor",
     lambda t: ["estimate", "-c", CFG, "--model", onnx_with_op(t.tmp, "Floor"), "-o", t.out]),
    # fault maps
    ("fault map", "a directory", 3, "is a directory; expected a file",
     lambda t: ["simulate", "-c", CFG, *FAST, "--weights", t.w, "--set", "faults.map=" + t.tmp, "-o", t.out]),
    ("fault map", "crossbar outside the chip", 3, "fm.csv:2: crossbar 9999 does not exist",
     simulate_with_map("crossbar,row,col,type\n9999,1,1,SA0\n")),
    ("fault map", "cell outside its crossbar", 3, "fm.csv:1: cell (500, 5) of crossbar 0 is outside",
     simulate_with_map("0,500,5,SA1\n")),
    ("fault map", "unknown fault type", 3, "fm.csv:1: unknown fault type 'SA2'", simulate_with_map("0,1,1,SA2\n")),
    ("fault map", "negative row", 3, "fm.csv:1: '-1' is not a non-negative integer", simulate_with_map("0,-1,1,SA1\n")),
    ("fault map", "three fields", 3, "fm.csv:1: 3 fields", simulate_with_map("0,1,SA1\n")),
]


class Ctx:
    pass


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    r = subprocess.run([XBAR, "train", "-c", CFG, "-o", str(d), "--set", "threads=1", "--set", "train.epochs=1",
                        "--set", "dataset.train_subset=256", "--set", "dataset.test_subset=64"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(d / "model.safetensors")


def case_id(c):
    return f"{c[0]}: {c[1]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input(case, tmp_path, weights):
    area, what, code, needle, argv = case
    t = Ctx()
    t.tmp = str(tmp_path / "in")
    os.makedirs(t.tmp)
    t.out = str(tmp_path / "out" / "run")
    t.w = weights
    args = argv(t)
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    if "WORLD_SIZE" in what:
        env["WORLD_SIZE"] = "2"
    before = set(os.listdir(tmp_path))
    r = subprocess.run([XBAR, *args], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    assert r.returncode == code, f"exit {r.returncode}, expected {code}; stderr: {r.stderr[-2000:]}"
    lines = [l for l in r.stderr.splitlines() if l.startswith("xbar: ") and not l.startswith("xbar: warning")]
    assert len(lines) == 1, f"expected one 'xbar: ' error line, got: {r.stderr[-2000:]}"
    for bad in ("terminate called", "Exception raised from", "Traceback", "Segmentation", "core dumped"):
        assert bad not in r.stderr, r.stderr[-2000:]
    assert needle in lines[0], f"'{needle}' not in: {lines[0]}"
    assert not os.path.exists(t.out), f"a failed run left {os.listdir(t.out)} in its run directory"
    assert not os.path.exists(os.path.dirname(t.out)), "a failed run left the directories it created"
    assert set(os.listdir(tmp_path)) == before, f"left behind: {set(os.listdir(tmp_path)) - before}"
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if ".tmp." in f]
    assert not leftovers, f"temporary files left: {leftovers}"


def table():
    rows = ["| # | area | bad input | exit | the one error line contains |", "|---|---|---|---|---|"]
    for i, (area, what, code, needle, _) in enumerate(CASES, 1):
        rows.append(f"| {i} | {area} | {what} | {code} | `{needle.replace('|', '¦')}` |")
    return "\n".join(rows) + "\n"


def test_table_in_docs_is_current():
    with open(os.path.join(ROOT, "docs", "ROBUSTNESS.md")) as f:
        doc = f.read()
    begin, end = "<!-- bad-inputs:begin -->\n", "<!-- bad-inputs:end -->"
    assert begin in doc and end in doc, "docs/ROBUSTNESS.md lacks the bad-inputs markers"
    embedded = doc[doc.index(begin) + len(begin):doc.index(end)]
    assert embedded == table(), "docs/ROBUSTNESS.md's table is stale: python3 tests/robustness/test_bad_inputs.py --table"


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        sys.stdout.write(table())
