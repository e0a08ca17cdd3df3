"""Compile configuration: model-wide precision and reuse factor, per-layer overrides.

A ``kiln.toml`` looks like::

    [model]
    precision = "fixed<16,6>"     # default type of every value and weight
    reuse_factor = "auto"         # or an integer for every layer
    budget = 0.7                  # with "auto": fraction of the board's DSP/LUT to fit
    io = "parallel"               # or "stream": layers joined by FIFOs under DATAFLOW

    [layers."/fc1/Gemm"]          # a node name from the model (after fusion: the fused layer
    precision = "fixed<18,8>"     # keeps the name of the Gemm/MatMul/Conv it came from)
    weight = "fixed<8,2>"
    bias = "fixed<12,4>"
    accum = "fixed<32,12>"
    reuse_factor = 4
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError
from kiln.precision import Precision, parse_precision

LAYER_KEYS = {"precision", "weight", "bias", "accum", "reuse_factor"}
MODEL_KEYS = {"precision", "reuse_factor", "budget", "io"}
IO_MODES = ("parallel", "stream")


@dataclass
class LayerConfig:
    precision: Precision | None = None
    weight: Precision | None = None
    bias: Precision | None = None
    accum: Precision | None = None
    reuse_factor: int | None = None


@dataclass
class Config:
    precision: Precision
    reuse_factor: int | str = "auto"  # "auto": chosen per layer to fit budget x the board
    budget: float = 0.7
    io: str = "parallel"  # "stream": layers joined by FIFOs under DATAFLOW (backends/hls/stream_plan.py)
    layers: dict[str, LayerConfig] = field(default_factory=dict)

    def layer(self, name: str) -> LayerConfig:
        return self.layers.get(name, LayerConfig())


def _reuse(value, where: str, allow_auto: bool = False) -> int | str:
    if allow_auto and value == "auto":
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        accepted = "a positive integer or 'auto'" if allow_auto else "a positive integer"
        raise KilnError(f"{where}: reuse_factor must be {accepted}, got {value!r}")
    return value


def make_config(precision: str | None = None, config: str | Path | dict | None = None,
                reuse_factor: int | str | None = None, budget: float | None = None, io: str | None = None) -> Config:
    """Build the Config from a TOML file/dict; explicit ``precision``/``reuse_factor`` win."""
    data: dict = {}
    where = "config"
    if isinstance(config, dict):
        data = config
    elif config is not None:
        path = Path(config)
        where = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise KilnError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise KilnError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"model", "layers"}
    if unknown:
        raise KilnError(f"{where}: unknown section(s) {sorted(unknown)}; expected [model] and [layers.NAME]")
    model = data.get("model", {})
    bad = set(model) - MODEL_KEYS
    if bad:
        raise KilnError(f"{where}: unknown key(s) {sorted(bad)} in [model]; allowed: {sorted(MODEL_KEYS)}")
    prec = parse_precision(precision or model.get("precision", "fixed<16,6>"), f"{where} [model] precision")
    rf = _reuse(reuse_factor if reuse_factor is not None else model.get("reuse_factor", "auto"), f"{where} [model]",
                allow_auto=True)
    budget = budget if budget is not None else model.get("budget", 0.7)
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 < budget <= 1:
        raise KilnError(f"{where}: budget must be a fraction in (0, 1], got {budget!r}")
    io = io if io is not None else model.get("io", "parallel")
    if io not in IO_MODES:
        raise KilnError(f"{where}: io must be one of {list(IO_MODES)}, got {io!r}")
    layers = {}
    for name, entry in data.get("layers", {}).items():
        here = f"{where} [layers.{name!r}]"
        bad = set(entry) - LAYER_KEYS
        if bad:
            raise KilnError(f"{here}: unknown key(s) {sorted(bad)}; allowed: {sorted(LAYER_KEYS)}")
        layers[name] = LayerConfig(
            **{k: parse_precision(v, f"{here} {k}") for k, v in entry.items() if k != "reuse_factor"},
            reuse_factor=_reuse(entry["reuse_factor"], here) if "reuse_factor" in entry else None)
    return Config(precision=prec, reuse_factor=rf, budget=float(budget), io=io, layers=layers)
