"""``kiln.compile(module, example_inputs=(x,))``: Kiln exports a torch.nn.Module itself
(frontend/torch_export.py: dynamo exporter first, legacy fallback) and says which it used.

Float C-sim agrees with the module's own PyTorch output (and with ONNX Runtime on the export)
to 1e-5 relative to the output scale.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.helpers import relative_error  # noqa: E402

import kiln  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.frontend import torch_export  # noqa: E402


class SmallNet(torch.nn.Module):
    """Linear -> LayerNorm -> GELU -> Linear -> Softmax, 16 -> 5."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 5)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(x)))), dim=-1)


class Broken(torch.nn.Module):
    def forward(self, x):
        raise ValueError("this forward always fails")


def small_net():
    torch.manual_seed(0)
    return SmallNet()


def torch_output(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def test_small_module_dynamo(tmp_path, capfd):
    module = small_net()
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    project = kiln.compile(module, example_inputs=(torch.from_numpy(x),), output_dir=tmp_path / "p",
                           precision="float")
    assert "exported SmallNet with torch.onnx dynamo exporter, opset 18" in capfd.readouterr().err
    assert module.training  # the module's mode is restored after the export
    got = project.csim(x)
    assert relative_error(got, torch_output(module, x)) <= 1e-5
    assert relative_error(got, project.reference(x)[0]) <= 1e-5


def test_legacy_fallback_when_dynamo_fails(tmp_path, capfd, monkeypatch):
    def dynamo_fails(module, args, opset):
        raise RuntimeError("dynamo cannot trace this")

    monkeypatch.setattr(torch_export, "EXPORTERS", (("dynamo", dynamo_fails),) + torch_export.EXPORTERS[1:])
    module = small_net()
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    project = kiln.compile(module, example_inputs=(torch.from_numpy(x),), output_dir=tmp_path / "p",
                           precision="float")
    err = capfd.readouterr().err
    assert "exported SmallNet with torch.onnx legacy exporter, opset 17" in err
    assert "dynamo cannot trace this" in err
    assert relative_error(project.csim(x), torch_output(module, x)) <= 1e-5


def test_both_exporters_fail_is_one_clear_error(tmp_path):
    with pytest.raises(KilnError) as info:
        kiln.compile(Broken(), example_inputs=(torch.zeros(1, 4),), output_dir=tmp_path / "p")
    message = str(info.value)
    assert message.startswith("Broken: torch.onnx could not export the module")
    assert "dynamo:" in message and "legacy:" in message and "this forward always fails" in message
    assert not (tmp_path / "p").exists()


def test_example_inputs_required_and_only_for_modules(tmp_path):
    with pytest.raises(KilnError, match="SmallNet: a PyTorch module needs example_inputs"):
        kiln.compile(small_net(), output_dir=tmp_path / "p")
    with pytest.raises(KilnError, match="example_inputs applies to PyTorch modules only"):
        kiln.compile("model.onnx", example_inputs=(torch.zeros(1, 4),), output_dir=tmp_path / "p")
    with pytest.raises(KilnError, match=r"example_inputs\[0\] needs a leading batch axis"):
        kiln.compile(small_net(), example_inputs=(torch.tensor(1.0),), output_dir=tmp_path / "p")


def test_kiln_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import kiln; from kiln.frontend import torch_export; "
            "assert not torch_export.is_torch_module(object()); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_timm_model(tmp_path, capfd):
    pytest.importorskip("timm")
    from examples.timm_zoo import build, samples

    module, size = build("mobilenetv3_small_050")
    x = samples(size, 4)
    project = kiln.compile(module, example_inputs=(torch.from_numpy(x),), output_dir=tmp_path / "p",
                           precision="float")
    assert "exported MobileNetV3 with torch.onnx dynamo exporter" in capfd.readouterr().err
    assert relative_error(project.csim(x), torch_output(module, x)) <= 1e-5
