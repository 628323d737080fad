"""rebuy: repeat-purchase analytics for retailers.

From a shop's transaction history: RFM segments and clusters, BG/NBD repeat-purchase and
Gamma-Gamma lifetime-value models, implicit-feedback product recommendations, and one
personalised offer per customer with its channel and its reason.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Lazy exports keep `import rebuy` light (lifetimes and implicit load only when used).
_EXPORTS = {
    "Config": "rebuy.config",
    "load_config": "rebuy.config",
    "load_transactions": "rebuy.data",
    "load_customers": "rebuy.data",
    "load_events": "rebuy.data",
    "RebuyError": "rebuy.errors",
    "DataError": "rebuy.errors",
    "ModelBundle": "rebuy.bundle",
    "load_model_bundle": "rebuy.bundle",
    "rfm_summary": "rebuy.features",
    "calibration_holdout_split": "rebuy.features",
    "Scorer": "rebuy.scoring",
    "fit": "rebuy.pipeline",
    "score": "rebuy.pipeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rebuy' has no attribute {name!r}")
