"""Latency and resource estimates per HLS layer, and for the whole design (ESTIMATES).

Every figure here is an estimate from the layer's shape, reuse factor R and precision,
labelled as such wherever it is shown; ``kiln synth`` replaces it with Vitis HLS's own
report when ``vitis_hls`` is available. The relations follow hls4ml's resource and
latency model for io_parallel layers (Duarte et al., JINST 13 P07027, 2018, section 4;
hls4ml's ``resource strategy`` docs) and the DSP48E2 multiplier size of UltraScale+
(AMD UG579: 27x18 signed multiplier):

* Initiation interval: every Kiln template pipelines its whole body with II = R, so a
  layer accepts a new sample every R cycles and the design every max(R) cycles.
* Multipliers: ceil(mults / R) are instantiated (R multiplications share one unit).
  A product whose operands are both <= 10 bits is built from LUTs (hls4ml's rule of
  thumb: Vivado maps narrow products to fabric), about 0.6 * wa * wb LUTs; wider ones
  take ceil(wa / 27) * ceil(wb / 18) DSPs. Float products take 3 DSPs (fmul) and adds
  2 DSPs (fadd) plus ~400 LUTs each (AMD floating-point operator data, PG060).
* Packed products: integer operands whose product fits 18 bits (int8 x uint8) share one
  DSP48 multiply between two outputs (AMD WP486), so ceil(multipliers / 2) DSPs, no LUTs.
* Adders: one accumulator of ``acc_bits`` per multiplier: acc_bits LUTs and FFs each.
* Latency in cycles: R (the shared multiplier's schedule) + 1 (multiply) +
  ceil(log2(fan_in)) (adder tree) + 1 (output register); element-wise layers 1-2
  cycles; softmax/LayerNorm add their two reductions (log2 of the row length each)
  and 3 cycles per table lookup / normalisation step.
* Registers (FF): every layer's output is registered (io_parallel), plus the
  accumulators.
* BRAM, counted in BRAM18K blocks (18 Kb; the boards' 36 Kb blocks count 2): weights stay in registers/LUTRAM while R < 64 (hls4ml partitions them
  into ceil(n/R) banks of depth R); from R >= 64 each bank of width W bits takes
  ceil(W / 36) BRAM18 per 512 words of depth. Lookup tables of more than 1024 entries
  take ceil(entries * width / 18432) BRAM18, smaller ones LUTRAM (~entries * width / 64
  LUTs).

Whole-model latency is the longest path through the layer graph (layers on parallel
branches overlap), not the sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

BRAM18_BITS = 18432
LUT_MULT_MAX_BITS = 10
FLOAT_MUL_DSP, FLOAT_ADD_DSP, FLOAT_OP_LUT = 3, 2, 400


@dataclass
class LayerCost:
    """What an emitter says about the work of its layer (filled in ``emit``)."""

    mults: int = 0          # multiplications per sample (by weights or between tensors)
    fan_in: int = 1         # terms summed per output (adder tree depth)
    a_bits: int = 32        # operand widths of the products (32 = float)
    b_bits: int = 32
    acc_bits: int = 32
    out_elems: int = 0      # output values per sample
    out_bits: int = 32
    weight_bits: int = 0    # total bits of constants (weights, biases)
    weight_width: int = 0   # bits of one weight
    table_entries: int = 0  # lookup-table entries (softmax, LayerNorm, GELU, sigmoid...)
    table_bits: int = 18
    adds: int = 0           # stand-alone additions/comparisons (element-wise, pooling, reductions)
    extra_latency: int = 0  # cycles beyond the multiply/add schedule (reductions, tables)
    is_float: bool = False
    reuse_factor: int = 1
    divisible: int = 0      # R must divide this (the template's weight partitioning); 0: R stays 1
    packed: bool = False    # two integer products per DSP48 multiply (kiln::dense_packed, AMD WP486)
    repeats: int = 1        # the hardware runs this many times per sample (attention sequences): II = repeats x R


@dataclass
class LayerEstimate:
    name: str
    op: str
    reuse: int
    ii: int
    latency_cycles: int
    dsp: int
    lut: int
    ff: int
    bram: int
    inputs: list = field(default_factory=list)   # names of producer layers (critical path)
    uram: int = 0                                # URAM blocks (stream mode, boards that have URAM: memory.py)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("inputs")
        return d


def bits(precision) -> int:
    """Width of a value of this type (float and int: 32)."""
    return getattr(precision, "width", 32)


def dsp_per_mult(cost: LayerCost) -> int:
    if cost.is_float:
        return FLOAT_MUL_DSP
    if cost.a_bits <= LUT_MULT_MAX_BITS and cost.b_bits <= LUT_MULT_MAX_BITS:
        return 0
    return math.ceil(cost.a_bits / 27) * math.ceil(cost.b_bits / 18)


def estimate_layer(name: str, op: str, cost: LayerCost, inputs: list[str]) -> LayerEstimate:
    r = max(1, cost.reuse_factor)
    units = math.ceil(cost.mults / r) if cost.mults else 0
    if cost.packed and not cost.is_float:  # narrow products, two to a DSP: no LUT multipliers
        dsp, lut = math.ceil(units / 2), 0
    else:
        dsp = units * dsp_per_mult(cost)
        lut = 0 if dsp_per_mult(cost) or not units else int(units * 0.6 * cost.a_bits * cost.b_bits)
    if cost.is_float:
        dsp += units * FLOAT_ADD_DSP
        lut += units * 2 * FLOAT_OP_LUT
    else:
        lut += units * cost.acc_bits
    lut += math.ceil(cost.adds / r) * (FLOAT_OP_LUT if cost.is_float else cost.acc_bits)
    ff = cost.out_elems * cost.out_bits + units * cost.acc_bits
    bram = 0
    if cost.weight_bits and r >= 64:
        banks = math.ceil(cost.weight_bits / max(cost.weight_width, 1) / r)
        bram += banks * math.ceil(cost.weight_width / 36) * math.ceil(r / 512)
    if cost.table_entries > 1024:
        bram += math.ceil(cost.table_entries * cost.table_bits / BRAM18_BITS)
    elif cost.table_entries:
        lut += math.ceil(cost.table_entries * cost.table_bits / 64)
    if units:
        latency = r + 1 + math.ceil(math.log2(max(cost.fan_in, 1))) + 1 + cost.extra_latency
    elif cost.out_elems:
        latency = 1 + cost.extra_latency + (math.ceil(math.log2(max(cost.fan_in, 1))) if cost.adds else 0)
    else:
        latency = 0  # pure wiring (reshape, copies)
    return LayerEstimate(name, op, r, r * max(1, cost.repeats), latency, dsp, lut, ff, bram, inputs)


@dataclass
class ModelEstimate:
    layers: list[LayerEstimate]
    clock_mhz: float
    budget: dict                              # the board's resources (BRAM in BRAM18K)
    fit: dict = field(default_factory=dict)   # the fit check (fit.FitResult.as_dict)

    @property
    def latency_cycles(self) -> int:
        """Longest path through the layer graph."""
        finish: dict[str, int] = {}
        for layer in self.layers:
            start = max((finish.get(p, 0) for p in layer.inputs), default=0)
            finish[layer.name] = start + layer.latency_cycles
        return max(finish.values(), default=0)

    @property
    def ii(self) -> int:
        return max((layer.ii for layer in self.layers), default=1)

    def total(self, key: str) -> int:
        return sum(getattr(layer, key) for layer in self.layers)

    def as_dict(self) -> dict:
        return {
            "estimate": True,
            "layers": [layer.as_dict() for layer in self.layers],
            "total": {"ii": self.ii, "latency_cycles": self.latency_cycles,
                      "latency_ns": self.latency_cycles * 1000.0 / self.clock_mhz,
                      **{k: self.total(k) for k in ("dsp", "lut", "ff", "bram", "uram")},
                      "clock_mhz": self.clock_mhz, "budget": self.budget, "bram_unit": "BRAM18K",
                      **({"budget_fraction": self.fit["budget_fraction"], "limits": self.fit["limits"],
                          "over": self.fit["over"]} if self.fit else {})},
            **({"fit": self.fit} if self.fit else {}),
        }
