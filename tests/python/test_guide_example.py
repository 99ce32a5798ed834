"""The notebook-style example of docs/USER_GUIDE.md ("From Python"), call for call, at test size."""
import onnx
import onnx.numpy_helper
import torch

import xbar
from conftest import LeNet5


def test_user_guide_example(fmnist, tmp_path):
    train_images, _, test_images, _ = fmnist
    torch.manual_seed(0)
    model = LeNet5()
    example = torch.randn(1, 1, 28, 28)
    config = {"dataset": {"normalize": False, "test_subset": 300, "train_subset": 2000},
              "mapping": {"scheme": "complementary", "weight_bits": 8, "cell_bits": 2, "adc_bits": 6}}

    analog = xbar.convert_to_analog(model, config, calibration=train_images[:256], example_input=example)
    logits = analog(test_images[:64])
    ideal = analog(test_images[:64], mode="reference")
    assert logits.shape == ideal.shape == (64, 10) and logits.dtype == torch.float32

    sim = xbar.simulate(config, model=model, example_input=example)
    assert 0 <= sim["accuracy"] <= 1 and [l["adc_bits"] for l in sim["layers"]] == [6] * 5
    cost = xbar.estimate(config, model=model, example_input=example)
    assert cost["model"]["fps"] > 0 and cost["model"]["energy_per_inference_uj"] > 0 and cost["model"]["area_mm2"] > 0

    out = tmp_path / "mine-compress"
    comp = xbar.compress({**config, "compress": {"sparsity": 0.8, "admm_rounds": 1, "epochs_per_round": 1,
                                                 "retrain_epochs": 1}},
                         model=model, example_input=example, out=out)
    g = onnx.load(str(out / "model.onnx"))
    model.load_state_dict({t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
                           for t in g.graph.initializer})
    nonzero = sum((p != 0).sum().item() for n, p in model.named_parameters() if n.endswith("weight"))
    assert nonzero == comp["weights_nonzero"] <= 0.21 * 61470

    camp = xbar.faults({**config, "faults": {"samples": 2, "rates": [1e-3, 1e-2], "test_images": 100}},
                       model=str(out / "model.onnx"))
    assert len(camp["curves"]) == 1 and len(camp["curves"][0]["points"]) >= 2
    res = xbar.run({**config, "run": {"stages": ["train", "simulate", "estimate", "report"]}},
                   model=str(out / "model.onnx"), out=tmp_path / "run")
    assert (tmp_path / "run" / "report.html").exists() and "simulate" in res
