"""Transfer from BiT's published weights: BiT's own ``.npz`` layout and timm's
``.safetensors``/``.pth``, loaded by timm, with the model read off the file. No network: the
files are written here from randomly initialised networks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from xferscale.cli import main
from xferscale.report.paper import source_images
from xferscale.transfer.pretrained import CheckpointError, load_pretrained
from xferscale.transfer.public_weights import KNOWN, WeightsError, inspect_weights


def _hwio(weight: torch.Tensor) -> np.ndarray:
    return weight.numpy().transpose(2, 3, 1, 0) if weight.ndim == 4 else weight.numpy()


def bit_npz_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A timm ResNetV2's weights in BiT's TensorFlow key layout (HWIO kernels), the layout of
    BiT-M-R50x1.npz that timm's ResNetV2.load_pretrained reads."""
    p, out = "resnet/", {}
    out[f"{p}root_block/standardized_conv2d/kernel"] = _hwio(model.stem.conv.weight.detach())
    out[f"{p}group_norm/gamma"], out[f"{p}group_norm/beta"] = (model.norm.weight.detach().numpy(),
                                                              model.norm.bias.detach().numpy())
    out[f"{p}head/conv2d/kernel"] = _hwio(model.head.fc.weight.detach())
    out[f"{p}head/conv2d/bias"] = model.head.fc.bias.detach().numpy()
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            unit = f"{p}block{i + 1}/unit{j + 1:02d}/"
            for part, conv, norm in (("a", block.conv1, block.norm1), ("b", block.conv2, block.norm2),
                                     ("c", block.conv3, block.norm3)):
                out[f"{unit}{part}/standardized_conv2d/kernel"] = _hwio(conv.weight.detach())
                out[f"{unit}{part}/group_norm/gamma"] = norm.weight.detach().numpy()
                out[f"{unit}{part}/group_norm/beta"] = norm.bias.detach().numpy()
            if block.downsample is not None:
                out[f"{unit}a/proj/standardized_conv2d/kernel"] = _hwio(block.downsample.conv.weight.detach())
    return out


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=1000)
    with torch.no_grad():  # a non-zero head and norms, so that copying them is visible
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    return model.eval()


@pytest.fixture(scope="module")
def weight_files(source_model, tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("weights")
    npz = folder / "BiT-S-R50x1.npz"
    np.savez(npz, **bit_npz_arrays(source_model))
    state = {k: v.contiguous() for k, v in source_model.state_dict().items()}
    safetensors = folder / "resnetv2_50x1_bit.goog_in21k.safetensors"
    save_file(state, str(safetensors))
    pth = folder / "r50x1-weights.pth"
    torch.save(state, pth)
    return {"npz": npz, "safetensors": safetensors, "pth": pth}


@pytest.mark.parametrize("kind, source", [("npz", "bit_s"), ("safetensors", "bit_m"), ("pth", "bit_s")])
def test_public_weights_load_as_the_source_network_with_a_new_zero_head(source_model, weight_files, kind, source):
    pretrained = load_pretrained(weight_files[kind])
    assert (pretrained.model_name, pretrained.num_classes, pretrained.source) == ("r50x1", 1000, source)
    assert pretrained.config["public_weights"]["file"] == weight_files[kind].name
    # the size of the paper's source the weights stand beside (BiT-S: ImageNet-1k, BiT-M: ImageNet-21k)
    assert pretrained.source_images == source_images({"bit_s": "in1k", "bit_m": "in21k"}[source]) > 1e6
    model = pretrained.build(num_classes=10, device=torch.device("cpu"))
    expected = source_model.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("head.fc."):
            assert tensor.shape[0] == 10 and not tensor.any(), name  # replaced and zero-initialised
        else:
            assert torch.equal(tensor, expected[name]), name
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the same features: the loaded network computes what the source computes
        torch.testing.assert_close(model.forward_head(model.forward_features(image), pre_logits=True),
                                   source_model.forward_head(source_model.forward_features(image), pre_logits=True))


def test_architecture_is_read_off_the_file(tmp_path):
    def npz(name, width, units):
        arrays = {"resnet/root_block/standardized_conv2d/kernel": np.zeros((7, 7, 3, 64 * width), np.float32),
                  "resnet/head/conv2d/kernel": np.zeros((1, 1, 8, 21843), np.float32)}
        for unit in range(1, units + 1):
            arrays[f"resnet/block3/unit{unit:02d}/a/group_norm/gamma"] = np.zeros(1, np.float32)
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    info = inspect_weights(npz("BiT-M-R152x4.npz", 4, 36))
    assert (info.model, info.num_classes, info.layout) == ("r152x4", 21843, "bit-npz")
    with pytest.raises(WeightsError, match="width 1 with 23 blocks in stage 3, which is neither R50x1 nor R152x4"):
        inspect_weights(npz("BiT-M-R101x1.npz", 1, 23))
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(WeightsError, match="not BiT ResNetV2 weights"):
        inspect_weights(tmp_path / "other.npz")


@pytest.mark.parametrize("kind", ["npz", "safetensors", "pth"])
def test_a_truncated_file_is_one_line_naming_it(weight_files, tmp_path, capsys, kind):
    cut = tmp_path / weight_files[kind].name
    data = weight_files[kind].read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=str(cut)):
        load_pretrained(cut)
    assert main(["weights", "verify", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cut) in err and "Traceback" not in err


def test_weights_list_and_verify(weight_files, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for entry in KNOWN:
        assert entry.name in out and entry.url in out
    assert main(["weights", "verify", str(weight_files["npz"])]) == 0
    out = capsys.readouterr().out
    assert "r50x1 (bit-npz layout" in out and "source bit_s" in out
    assert f"  {weight_files['npz'].name}" in out and len(out.split("sha256 ")[1].split()[0]) == 64


def test_transfer_from_bit_weights_records_their_source(weight_files, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["transfer", "--checkpoint", str(weight_files["npz"]), "--shots", "1", "--seeds", "0",
                 "--baselines", "none", "--schedule-scale", "0.01", "--batch-size", "16", "--crop", "32", "--results", str(results),
                 "--no-progress", "--no-report"]) == 0
    (record,) = results.rglob("seed-0.json")
    assert record.relative_to(results).parts[:3] == ("bit_s", "r50x1", "digits")
    assert json.loads(record.read_text())["value"] is not None


def test_bit_weight_rows_stand_under_the_paper_row_they_compare_with():
    from xferscale.report.aggregate import Cell
    from xferscale.report.paper import paper_value
    from xferscale.report.tables import build_tables, render_markdown

    ours = {("bit_m", "r50x1", "cifar10"): Cell("bit_m", "r50x1", "cifar10", "full", "acc", [0], [97.0]),
            ("in21k", "r50x1", "cifar10"): Cell("in21k", "r50x1", "cifar10", "full", "acc", [0], [96.0])}
    (table,) = [t for t in build_tables(ours) if ("r50x1", "in21k") in t.rows]
    at = table.rows.index(("r50x1", "in21k"))
    assert table.rows[at + 1] == ("r50x1", "bit_m")  # right under the paper's row, not in "other"
    cell = table.cell("r50x1", "bit_m", "cifar10")
    assert cell.paper == paper_value("r50x1", "in21k", "cifar10") and cell.diff == pytest.approx(97.0 - cell.paper.mean)
    assert "| r50x1 | bit_m (BiT's weights) | 97.00" in render_markdown(table, expected_seeds=1)
