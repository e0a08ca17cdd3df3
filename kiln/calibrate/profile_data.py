"""The profile of a model's values: per-value statistics (``ValueStats``) and the
``Profile`` saved in a project as ``kiln_profile.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kiln.errors import KilnError
from kiln.fsutil import atomic_write_bytes

PROFILE_FILE = "kiln_profile.json"
PROFILE_VERSION = 1
PERCENTILES = (0.1, 1.0, 25.0, 50.0, 75.0, 99.0, 99.9)
# floor(log2|x|) histogram bins cover [HIST_MIN, HIST_MAX]; values beyond land in the end bins
HIST_MIN, HIST_MAX = -64, 63
# percentiles are exact up to this many elements per value; beyond it they come from a
# uniform random subsample of about this size (min/max/abs max/histogram are always exact)
PERCENTILE_SAMPLE_CAP = 1 << 18


def pct_key(p: float) -> str:
    return f"{p:g}"


@dataclass
class ValueStats:
    """What ``profile`` observed of one tensor over all samples (every element of every sample)."""

    name: str
    shape: list                  # one sample's shape as ONNX Runtime computes it (batch axis as 1)
    count: int                   # finite elements observed
    min: float
    max: float
    abs_max: float
    mean: float
    std: float
    zeros: int                   # elements exactly 0
    nonfinite: int = 0           # inf/nan elements (left out of every other figure)
    percentiles: dict = field(default_factory=dict)      # of x: "0.1" .. "99.9" -> value
    abs_percentiles: dict = field(default_factory=dict)  # of |x| over non-zero finite elements
    hist_lo: int = 0             # floor(log2|x|) of hist[0]
    hist: list = field(default_factory=list)  # counts of non-zero |x| per floor(log2|x|) bin
    exact_percentiles: bool = True

    @property
    def abs_min_nonzero_log2(self) -> int | None:
        """floor(log2) of the smallest non-zero |x| (from the histogram), None if all zero."""
        for i, c in enumerate(self.hist):
            if c:
                return self.hist_lo + i
        return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ValueStats":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Profile:
    """Per-value statistics of a model on ``n_samples`` samples; ``values`` in graph order
    (graph inputs first)."""

    n_samples: int
    values: dict                 # name -> ValueStats
    model: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    batched: bool = False        # ONNX Runtime ran whole batches (else one sample per run)
    seconds: float = 0.0
    version: int = PROFILE_VERSION

    def __getitem__(self, name: str) -> ValueStats:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def to_dict(self) -> dict:
        return {"version": self.version, "model": self.model, "n_samples": self.n_samples,
                "batched": self.batched, "seconds": round(self.seconds, 3), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "percentiles": [pct_key(p) for p in PERCENTILES],
                "values": [v.to_dict() for v in self.values.values()]}

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        values = {v["name"]: ValueStats.from_dict(v) for v in d["values"]}
        return cls(n_samples=int(d["n_samples"]), values=values, model=d.get("model", ""),
                   inputs=list(d.get("inputs", [])), outputs=list(d.get("outputs", [])),
                   batched=bool(d.get("batched", False)), seconds=float(d.get("seconds", 0.0)),
                   version=int(d.get("version", PROFILE_VERSION)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Profile":
        return cls.from_dict(json.loads(text))

    def save(self, path) -> Path:
        """Write atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        atomic_write_bytes(path, self.to_json().encode())
        return path


def load_profile(path) -> Profile:
    """Read a ``kiln_profile.json``; a missing or corrupt file is a KilnError."""
    path = Path(path)
    try:
        return Profile.from_json(path.read_text())
    except FileNotFoundError:
        raise KilnError(f"{path}: no such profile file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise KilnError(f"{path} is not a valid Kiln profile ({type(exc).__name__}: {exc}); "
                        "profile again with `kiln report PROJECT --data SAMPLES.npy`") from None


