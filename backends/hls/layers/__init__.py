"""HLS layer emitters: one module per operator family, each registering itself.

An emitter reads one IR node and returns the C++ config struct and the call that the
top function makes (see ``base.LayerEmitter``). To add an operator: write the C++
template in ``hls_templates/nnet/``, an emitter module here, and its test; ``TEMPLATE.py``
shows the hooks to fill (it is not registered).
"""

import importlib
import pkgutil

from kiln.backends.hls.layers.base import REGISTRY, Layer, LayerEmitter, emitter_for, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "TEMPLATE"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "Layer", "LayerEmitter", "emitter_for", "register"]
