"""GLVD Face training: the synthetic data engine (``synth``), ``train``, ``evaluate``, ``baselines``.

Never bundled with the extension: the runtime (package ``glvd``, vendor/glvd) is inference only,
and this package imports it. ``glvd-train`` / ``python -m glvd_train`` is the command line.
"""

from __future__ import annotations

__version__ = "0.1.0"
