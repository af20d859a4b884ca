"""Restoration building blocks, kept as separate pieces so that any operator works with any rule.

- :mod:`medidiff.restoration.operators`: degradation operators A (forward, transpose, pseudo-inverse) on
  torch tensors ``(B, C, I, J, K)``, differentiable in their parameters phi.
- :mod:`medidiff.restoration.noise`: measurement-noise models (Gaussian, Rician), Rician bias correction and
  noise-level estimation from the data.

Import the submodules directly; this package imports nothing heavy.
"""

from __future__ import annotations
