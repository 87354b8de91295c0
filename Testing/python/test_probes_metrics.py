"""Probe metrics / survival statistics / Cox loss agree with scikit-learn, lifelines and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelfm.probes import metrics as M
from voxelfm.probes.losses import cox_partial_likelihood
from voxelfm.probes.survival import kaplan_meier, logrank_test

sk_metrics = pytest.importorskip("sklearn.metrics")
lifelines = pytest.importorskip("lifelines")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_roc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates tied scores
    assert M.roc_auc(y, s) == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(y, s)
    sfpr, stpr, sthr = sk_metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr, atol=1e-12)
    np.testing.assert_allclose(tpr, stpr, atol=1e-12)
    np.testing.assert_allclose(thr[1:], sthr[1:], atol=1e-12)


def test_auc_one_class_is_nan():
    assert np.isnan(M.roc_auc(np.ones(5), np.arange(5.0)))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(80, 3))
    p = t + rng.normal(size=(80, 3))
    assert M.r2_score(t, p) == pytest.approx(sk_metrics.r2_score(t, p), abs=1e-12)
    assert M.r2_score(t[:, 0], p[:, 0]) == pytest.approx(sk_metrics.r2_score(t[:, 0], p[:, 0]), abs=1e-12)
    assert M.mean_absolute_error(t, p) == pytest.approx(sk_metrics.mean_absolute_error(t, p), abs=1e-12)
    assert M.pearson_r(t[:, 0], p[:, 0]) == pytest.approx(np.corrcoef(t[:, 0], p[:, 0])[0, 1], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_c_index_matches_lifelines_with_ties_and_censoring(seed):
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(seed)
    n = 150
    time = rng.integers(1, 30, n).astype(float)  # many tied times
    event = rng.integers(0, 2, n)
    risk = np.round(rng.normal(size=n) - 0.05 * time, 1)  # tied risks
    ours = M.concordance_index(time, risk, event)
    theirs = concordance_index(time, -risk, event)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert ours > 0.5  # risk was built to be (weakly) concordant


def test_c_index_all_censored_is_nan():
    assert np.isnan(M.concordance_index(np.arange(1.0, 6.0), np.arange(5.0), np.zeros(5)))


def test_bootstrap_ci_brackets_value_and_shrinks_with_n():
    rng = np.random.default_rng(0)

    def ci_width(n):
        y = rng.integers(0, 2, n)
        s = rng.normal(size=n) + y
        out = M.with_ci(lambda i: M.roc_auc(y[i], s[i]), n, n_boot=300, strata=y)
        lo, hi = out["ci95"]
        assert lo <= out["value"] <= hi
        return hi - lo

    assert ci_width(1000) < ci_width(60)


def test_kaplan_meier_and_logrank_match_lifelines():
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test as lf_logrank

    rng = np.random.default_rng(5)
    time = rng.integers(1, 20, 90).astype(float)
    event = rng.integers(0, 2, 90)
    group = rng.integers(0, 2, 90).astype(bool)
    time[group] += 3  # a group effect
    km = kaplan_meier(time, event)
    kmf = KaplanMeierFitter().fit(time, event)
    ref = kmf.survival_function_.iloc[:, 0]
    np.testing.assert_allclose(km.survival, ref.reindex(km.time).to_numpy(), atol=1e-12)
    stat, p = logrank_test(time, event, group)
    res = lf_logrank(time[group], time[~group], event[group], event[~group])
    assert stat == pytest.approx(res.test_statistic, rel=1e-9)
    assert p == pytest.approx(res.p_value, rel=1e-9)


def _cox_brute_force(risk, time, event):
    total = 0.0
    for i in range(len(risk)):
        if event[i]:
            at_risk = time >= time[i]
            total += risk[i] - np.log(np.exp(risk[at_risk]).sum())
    return -total / event.sum()


def test_cox_loss_breslow_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    risk = rng.normal(size=40)
    time = rng.integers(1, 8, 40).astype(float)
    event = rng.integers(0, 2, 40).astype(float)
    ours = cox_partial_likelihood(torch.tensor(risk), torch.tensor(time), torch.tensor(event))
    assert float(ours) == pytest.approx(_cox_brute_force(risk, time, event), rel=1e-10)


def test_cox_loss_minimiser_matches_lifelines_coefficients():
    """Without tied times Breslow = Efron, so our minimiser must equal lifelines' unpenalised Cox fit."""
    import pandas as pd
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2))
    t = rng.exponential(1.0 / np.exp(x @ np.array([0.8, -0.5])))
    c = rng.exponential(2.0, 200)
    time, event = np.minimum(t, c), (t <= c).astype(float)
    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12)
    xt, tt, et = torch.tensor(x), torch.tensor(time), torch.tensor(event)

    def closure():
        opt.zero_grad()
        loss = cox_partial_likelihood(xt @ beta, tt, et)
        loss.backward()
        return loss

    opt.step(closure)
    df = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "T": time, "E": event})
    ref = CoxPHFitter().fit(df, "T", "E").params_.to_numpy()
    # lifelines stops its Newton iterations at a looser tolerance; same optimum to 1e-4, and ours is no worse
    np.testing.assert_allclose(beta.detach().numpy(), ref, atol=1e-4)
    at_ref = float(cox_partial_likelihood(xt @ torch.tensor(ref), tt, et))
    with torch.no_grad():
        at_ours = float(cox_partial_likelihood(xt @ beta, tt, et))
    assert at_ours <= at_ref + 1e-12
