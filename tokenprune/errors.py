"""One small exception hierarchy.

Every message says what was wrong, where, what was expected and what to do; :func:`describe` keeps
that shape uniform so tests can pin messages without depending on punctuation.
"""

from __future__ import annotations


class TokenPruneError(Exception):
    """Base class of every error tokenprune raises on purpose."""


class SpecError(TokenPruneError):
    """A model spec is malformed or does not fit the model it is applied to."""


class SpecMatchError(SpecError):
    """No bundled spec (or more than one) matches a model's architecture."""


class ScheduleError(TokenPruneError, ValueError):
    """A schedule or budget is not valid for the model it is applied to."""


class TraceError(TokenPruneError):
    """The language model could not be traced or rewritten safely."""


class UnsupportedError(TokenPruneError):
    """A valid request that tokenprune cannot serve correctly, refused instead of answered wrongly."""


def describe(what: str, where: str | None = None, expected: str | None = None, fix: str | None = None) -> str:
    """Format an error message as: what [at where]; expected ...; fix."""
    parts = [what if where is None else f"{what} (at {where})"]
    if expected:
        parts.append(f"expected {expected}")
    if fix:
        parts.append(fix)
    return "; ".join(parts)
