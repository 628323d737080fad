"""Repeat-purchase and spend models, customer lifetime value and the value score table.

Layout (one job per module)::

    inputs.py       summary columns -> validated float arrays; distinct rows and their weights
    special.py      hyp2f1, finite where scipy's is not
    optimize.py     BFGS, warm start, retry with retry_penalizer, degenerate-fit rule, Hessian
    base.py         BaseFitter (params_, from_params, from_config, summary, __repr__),
                    PurchaseModel, ConditionalForecast and SpendModel (the interfaces
                    clv.py and value.py use)
    bgnbd.py        BG/NBD: likelihood, objective (+ gradient), BGNBDModel, BGNBDForecast
    mbgnbd.py       MBG/NBD: likelihood, objective (+ gradient), MBGNBDModel, MBGNBDForecast
    pareto_nbd.py   Pareto/NBD: likelihood, objective (+ gradient), ParetoNBDModel, ParetoNBDForecast
    gamma_gamma.py  Gamma-Gamma: likelihood, objective (+ gradient), GammaGammaModel
    clv.py          customer_lifetime_value(purchase_model, spend_model, summary, ...)
    predictive.py   spend over a horizon: mean and predictive interval from any purchase x spend model
    selection.py    purchase_model: auto (candidates scored on holdouts), the p_purchase_90d calibrator
    ranker.py       CLVRanker: gradient-boosted spend ranking trained on a shifted window (clv.method)
    value.py        score_value(summary, purchase_model, spend_model, config, calibrator)

Fitting maximises exactly lifetimes' objective of the same model (``BetaGeoFitter``,
``ModifiedBetaGeoFitter``, ``ParetoNBDFitter``, ``GammaGammaFitter``: same likelihood, time scaling,
penalizer, BFGS and tolerance) on the distinct input rows with their
counts as weights, with an analytic gradient; ``solver="lifetimes"`` calls lifetimes' fitters.
Time is in the summary's time unit (``"weeks"`` = days / 7, or ``"days"``); money is in the
transactions' currency.

Adding a purchase model (as ``mbgnbd.py`` and ``pareto_nbd.py`` were):

1. One file. Write the per-customer log-likelihood and an objective class: ``theta -> (f, grad)``
   on log parameters, ``f`` the weighted mean negative log-likelihood plus
   ``penalizer * sum(params**2)``, with attributes ``penalizer`` and ``W`` (see ``optimize.py``).
2. Subclass :class:`PurchaseModel`: set ``PARAM_NAMES``, ``SHAPE_PARAMS``, ``DISPLAY_NAME``;
   the hyper-parameters ``penalizer, retry_penalizer, solver`` come from the base ``__init__``;
   implement the objective hooks (``_objective``, ``_from_theta``, ``_to_theta``, ``_lifetimes_fitter``) and the
   predictions (``log_likelihood``, ``p_alive``, ``expected_purchases``,
   ``probability_of_purchase``, ``expected_purchases_population``) and, for spend intervals,
   ``alive_count_moments`` (P(no purchase), E[N], E[N(N-1)] for a customer alive now; test it
   against Monte Carlo draws of the model's process). ``fit``, ``from_params``,
   ``from_config``, standard errors, ``summary`` and the forecast hook ``conditional`` (P(alive),
   expected purchases at many horizons, next-purchase days) come from the base; override
   ``conditional`` only for speed, returning a ``ConditionalForecast`` subclass (see bgnbd.py).
3. Register it in :data:`PURCHASE_MODELS` and re-export it here; CLV and ``score_value`` then
   work with it unchanged. Test it against lifetimes' fitter of the same model where one exists.
"""

from __future__ import annotations

from rebuy.errors import ModelFitError
from rebuy.models.base import BaseFitter, ConditionalForecast, PurchaseModel, SpendModel
from rebuy.models.bgnbd import BGNBDForecast, BGNBDModel, BGNBDObjective, bgnbd_log_likelihood
from rebuy.models.clv import MONTH_IN_UNITS, customer_lifetime_value
from rebuy.models.gamma_gamma import GammaGammaModel, GammaGammaObjective, gamma_gamma_log_likelihood
from rebuy.models.mbgnbd import MBGNBDForecast, MBGNBDModel, MBGNBDObjective, mbgnbd_log_likelihood
from rebuy.models.optimize import SOLVERS
from rebuy.models.pareto_nbd import (
    ParetoNBDForecast,
    ParetoNBDModel,
    ParetoNBDObjective,
    pareto_nbd_log_likelihood,
)
from rebuy.models.value import SCORE_HORIZONS_DAYS, score_value

PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {"bgnbd": BGNBDModel}
"""Purchase models by config name."""
PURCHASE_MODELS["mbgnbd"] = MBGNBDModel
PURCHASE_MODELS["pareto_nbd"] = ParetoNBDModel

SPEND_MODELS: dict[str, type[SpendModel]] = {"gamma_gamma": GammaGammaModel}
"""Spend models by config name."""

# Pickles (model bundles) name the public path, not the file the class lives in, so bundles keep
# loading when a model moves between files.
for _cls in (BGNBDModel, GammaGammaModel, MBGNBDModel, ParetoNBDModel):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "MONTH_IN_UNITS",
    "PURCHASE_MODELS",
    "SCORE_HORIZONS_DAYS",
    "SOLVERS",
    "SPEND_MODELS",
    "BGNBDForecast",
    "BGNBDModel",
    "BGNBDObjective",
    "BaseFitter",
    "ConditionalForecast",
    "GammaGammaModel",
    "GammaGammaObjective",
    "MBGNBDForecast",
    "MBGNBDModel",
    "MBGNBDObjective",
    "ParetoNBDForecast",
    "ParetoNBDModel",
    "ParetoNBDObjective",
    "ModelFitError",
    "PurchaseModel",
    "SpendModel",
    "bgnbd_log_likelihood",
    "customer_lifetime_value",
    "gamma_gamma_log_likelihood",
    "mbgnbd_log_likelihood",
    "pareto_nbd_log_likelihood",
    "score_value",
]
