"""Re-export of :mod:`rebuy.recommend.evaluate` (the recommender's time-split evaluation).

Kept so that ``from rebuy.evaluate_recommender import evaluate_recommender`` (the command line,
notebooks, the report tests) keeps working; the code lives in the ``rebuy.recommend`` package.
"""

from __future__ import annotations

from rebuy.recommend.evaluate import (
    METHODS,
    MODES,
    Split,
    evaluate_recommender,
    own_history_lists,
    popularity_lists,
    prepare_split,
    ranking_metrics,
    score_model,
    summarise,
)

__all__ = [
    "METHODS", "MODES", "Split", "evaluate_recommender", "own_history_lists", "popularity_lists",
    "prepare_split", "ranking_metrics", "score_model", "summarise",
]
