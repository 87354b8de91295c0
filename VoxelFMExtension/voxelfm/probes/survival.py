"""Kaplan-Meier estimate and the log-rank test (for the survival report), in numpy.

Implemented here so the core needs no lifelines; the tests compare with lifelines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2


@dataclass
class KaplanMeier:
    time: np.ndarray  # step times, starting at 0
    survival: np.ndarray  # S(t) just after each step time
    at_risk: np.ndarray  # number at risk just before each step time
    events: np.ndarray  # events at each step time


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> KaplanMeier:
    """Product-limit estimate S(t) = prod_{t_i <= t} (1 - d_i / n_i) over distinct event/censor times."""
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1) > 0.5
    uniq = np.unique(t)
    at_risk = np.array([(t >= u).sum() for u in uniq], dtype=np.float64)
    deaths = np.array([(e & (t == u)).sum() for u in uniq], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - deaths / np.where(at_risk > 0, at_risk, 1.0), 1.0)
    surv = np.cumprod(factor)
    return KaplanMeier(
        time=np.r_[0.0, uniq],
        survival=np.r_[1.0, surv],
        at_risk=np.r_[float(t.size), at_risk],
        events=np.r_[0.0, deaths],
    )


def logrank_test(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    """Two-group log-rank test: (chi-square statistic with 1 dof, p-value)."""
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1) > 0.5
    g = np.asarray(group).reshape(-1).astype(bool)
    obs_minus_exp = 0.0
    var = 0.0
    for u in np.unique(t[e]):
        at_risk = t >= u
        n = at_risk.sum()
        n1 = (at_risk & g).sum()
        d = (e & (t == u)).sum()
        d1 = (e & (t == u) & g).sum()
        obs_minus_exp += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    if var <= 0:
        return float("nan"), float("nan")
    stat = obs_minus_exp**2 / var
    return float(stat), float(chi2.sf(stat, 1))
