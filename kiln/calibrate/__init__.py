"""Calibration (a package, one module per job): the observed ranges of a model's values on
sample inputs, fixed-point types chosen from them, and int8 Q/DQ ONNX models calibrated on the same samples.

* ``load_samples`` reads a ``.npy`` (one model input) or ``.npz`` (one array per input, by
  name or in order) and checks it against the model's inputs.
* ``profile`` runs ONNX Runtime with every input-dependent float tensor exposed as an output
  (whole batches at once when the model's batch axis is symbolic, else one sample per run)
  and records per value: min, max, abs max, mean, std, the 0.1/1/25/50/75/99/99.9
  percentiles of x and of |x| (non-zero elements), and a histogram of floor(log2|x|), in the
  spirit of hls4ml's profiling. The result is a ``Profile``, saved in a project as
  ``kiln_profile.json``.
* ``choose_fixed`` turns one value's stats into an ``ap_fixed`` type of a given width.
* ``write_int8_qdq`` writes an int8 QuantizeLinear/DequantizeLinear model with ONNX
  Runtime's static quantizer, calibrated on the samples.

Modules: ``profile_data`` (ValueStats, Profile, kiln_profile.json), ``samples`` (input specs,
sample files), ``runner`` (ONNX Runtime over N samples), ``profiling`` (``profile``),
``types`` (``choose_fixed``, ``fits``), ``int8`` (``write_int8_qdq``, ``compare_models``).
"""

from kiln.calibrate.int8 import compare_models, count_qdq_nodes, write_int8_qdq
from kiln.calibrate.profile_data import (PERCENTILE_SAMPLE_CAP, PERCENTILES, PROFILE_FILE, PROFILE_VERSION, Profile,
                                         ValueStats, load_profile)
from kiln.calibrate.profiling import profile
from kiln.calibrate.runner import BATCH_SIZE, run_model
from kiln.calibrate.samples import load_samples, model_input_specs
from kiln.calibrate.types import choose_fixed, fits

__all__ = ["BATCH_SIZE", "PERCENTILES", "PERCENTILE_SAMPLE_CAP", "PROFILE_FILE", "PROFILE_VERSION", "Profile",
           "ValueStats", "choose_fixed", "compare_models", "count_qdq_nodes", "fits", "load_profile", "load_samples",
           "model_input_specs", "profile", "run_model", "write_int8_qdq"]
