"""Scorers decide *which* vision tokens survive a cut; each is registered by name (kind ``scorer``)."""

from .context import ScoreContext
from .scorers import DEFAULT_SCORER, last_token_attention, next_layer_attention, random_scores, text_mean_attention

__all__ = ["ScoreContext", "DEFAULT_SCORER", "last_token_attention", "next_layer_attention",
           "text_mean_attention", "random_scores"]
