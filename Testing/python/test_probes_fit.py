"""Probe fitting on synthetic features with a planted signal: recovers it, stays at chance on shuffled targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from probe_synth import lesion_tokens, planted, survival_targets

from voxelfm.probes import ProbeConfig, fit_probe, load_probe, save_probe
from voxelfm.probes.report import write_report

torch.set_num_threads(1)
FAST = {"n_bootstrap": 200, "pooling": "cls"}


@pytest.fixture(scope="module")
def data():
    feats, z = planted(n=120, c=32, amp=3.0, seed=0)
    score = z[:, 0] + z[:, 1]
    rng = np.random.default_rng(1)
    return {
        "feats": feats,
        "z": z,
        "binary": (score + 0.3 * rng.normal(size=score.size) > 0).astype(int),
        "value": 10.0 + 5.0 * score + 1.0 * rng.normal(size=score.size),
        "surv": survival_targets(1.5 * score, seed=2),
        "perm": np.random.default_rng(7).permutation(score.size),
    }


def data_binary(fit):
    return fit.targets.y[:, 0]


@pytest.fixture(scope="module")
def binary_fit(data):
    return fit_probe("classification", data["feats"], data["binary"], ProbeConfig(**FAST))


def test_binary_linear_recovers_signal(binary_fit):
    m = binary_fit.metrics
    assert binary_fit.probe.kind == "binary"
    assert m["auc"]["value"] > 0.85
    lo, hi = m["auc"]["ci95"]
    assert lo <= m["auc"]["value"] <= hi and hi - lo < 0.2
    assert m["knn_baseline"]["auc"]["value"] > 0.75  # the baseline runs and sees the signal too
    assert binary_fit.tested.all() and np.isfinite(binary_fit.oof_predictions).all()
    assert set(binary_fit.folds.tolist()) == {0, 1, 2, 3, 4}
    sk = pytest.importorskip("sklearn.metrics")  # reported metric == scikit-learn's on the same predictions
    assert m["auc"]["value"] == pytest.approx(
        sk.roc_auc_score(data_binary(binary_fit), binary_fit.oof_predictions)
    )


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_binary_shuffled_is_chance(data, head):
    # one permutation's out-of-fold AUC has sd ~0.075 at n=120 (checked with scikit-learn on the same data),
    # so the mean over 4 fixed permutations is tested (sd ~0.04)
    aucs = []
    for seed in range(4):
        y = data["binary"][np.random.default_rng(100 + seed).permutation(len(data["binary"]))]
        r = fit_probe(
            "classification", data["feats"], y, ProbeConfig(head=head, knn_k=0, n_bootstrap=0, pooling="cls")
        )
        aucs.append(r.metrics["auc"]["value"])
    assert abs(np.mean(aucs) - 0.5) < 0.12, aucs


def test_regression_mlp_recovers_signal_and_shuffled_does_not(data):
    r = fit_probe("regression", data["feats"], data["value"], ProbeConfig(head="mlp", **FAST))
    assert r.metrics["r2"]["value"] > 0.6
    sk = pytest.importorskip("sklearn.metrics")
    assert r.metrics["r2"]["value"] == pytest.approx(
        sk.r2_score(data["value"], r.oof_predictions[:, 0]), abs=1e-9
    )
    per = r.metrics["per_target"]["value"]
    assert per["mae"]["value"] < 5.0  # target sd is about 7.2
    shuffled = fit_probe(
        "regression", data["feats"], data["value"][data["perm"]], ProbeConfig(head="mlp", **FAST)
    )
    assert shuffled.metrics["r2"]["value"] < 0.1
    # predictions are on the target's own scale (not standardised)
    assert abs(np.mean(r.oof_predictions) - 10.0) < 2.0


def test_survival_cox_recovers_signal_and_shuffled_is_chance(data):
    r = fit_probe("survival", data["feats"], data["surv"], ProbeConfig(**FAST))
    assert r.metrics["c_index"]["value"] > 0.7
    lifelines_utils = pytest.importorskip("lifelines.utils")
    ref = lifelines_utils.concordance_index(data["surv"][:, 0], -r.oof_predictions, data["surv"][:, 1])
    assert r.metrics["c_index"]["value"] == pytest.approx(ref, abs=1e-9)
    assert r.metrics["logrank_median_split"]["p_value"] < 0.01
    assert "c_index" in r.metrics["knn_baseline"]
    s = data["surv"][data["perm"]]
    shuffled = fit_probe("survival", data["feats"], s, ProbeConfig(knn_k=0, **FAST))
    assert abs(shuffled.metrics["c_index"]["value"] - 0.5) < 0.1


def test_multilabel_and_multiclass(data):
    z = data["z"]
    labels = np.stack([z[:, 0] > 0, z[:, 1] > 0.3], axis=1).astype(int)
    r = fit_probe(
        "classification", data["feats"], labels, ProbeConfig(knn_k=0, **FAST), target_names=["a", "b"]
    )
    assert r.probe.kind == "multilabel" and r.oof_predictions.shape == (120, 2)
    assert r.metrics["per_target"]["a"]["auc"]["value"] > 0.85
    assert r.metrics["per_target"]["b"]["auc"]["value"] > 0.85
    sector = np.stack([z[:, 0], z[:, 1], -z[:, 0] - z[:, 1]], axis=1).argmax(1)  # linearly separable classes
    classes = np.array(["b", "c", "a"])[sector]
    r = fit_probe("classification", data["feats"], classes, ProbeConfig(knn_k=0, **FAST))
    assert r.probe.kind == "multiclass" and r.probe.class_names == ["a", "b", "c"]
    assert r.metrics["auc_macro_ovr"]["value"] > 0.85
    np.testing.assert_allclose(r.oof_predictions.sum(1), 1.0, atol=1e-9)


def test_attentive_probe_finds_signal_in_few_tokens():
    feats, y = lesion_tokens(n=120, c=16, grid=(4, 4, 4), seed=0)
    mean = fit_probe("classification", feats, y, ProbeConfig(pooling="mean", n_bootstrap=0, knn_k=0))
    att = fit_probe("classification", feats, y, ProbeConfig(head="attentive", n_bootstrap=0, knn_k=0))
    assert att.metrics["auc"]["value"] > 0.85
    assert att.metrics["auc"]["value"] > mean.metrics["auc"]["value"] + 0.1


def test_given_split_and_folds(data):
    n = len(data["feats"])
    split = np.where(np.arange(n) < 90, "train", "test")
    r = fit_probe("classification", data["feats"], data["binary"], ProbeConfig(knn_k=0, **FAST), split=split)
    assert r.tested.sum() == 30 and not r.tested[:90].any()
    assert r.metrics["evaluation"] == "test split" and r.metrics["auc"]["value"] > 0.8
    folds = np.array(["site-a", "site-b", "site-c"])[np.arange(n) % 3]
    r = fit_probe("classification", data["feats"], data["binary"], ProbeConfig(knn_k=0, **FAST), folds=folds)
    assert set(r.folds.tolist()) == {0, 1, 2} and r.tested.all()
    assert len(r.metrics["per_fold"]["values"]) == 3


def test_deterministic_for_a_seed(data):
    cfg = ProbeConfig(head="mlp", n_bootstrap=0, knn_k=0, pooling="cls", max_epochs=40)
    a = fit_probe("classification", data["feats"], data["binary"], cfg)
    b = fit_probe("classification", data["feats"], data["binary"], cfg)
    np.testing.assert_array_equal(a.oof_predictions, b.oof_predictions)


def test_early_stopping_stops_before_max_epochs(data):
    y = data["binary"][data["perm"]]  # nothing to learn: validation loss stops improving early
    r = fit_probe(
        "classification", data["feats"], y, ProbeConfig(head="mlp", max_epochs=500, patience=10, **FAST)
    )
    hist = r.probe.training["history"]
    assert all(h["epochs"] < 500 and h["best_epoch"] <= h["epochs"] - 10 for h in hist.values())


def test_balanced_class_weights_raise_minority_probabilities(data):
    rng = np.random.default_rng(3)
    score = data["z"][:, 0] + rng.normal(size=120)
    y = (score > np.quantile(score, 0.85)).astype(int)  # 15% positives
    kw = {"head": "mlp", "knn_k": 0, "n_bootstrap": 0, "pooling": "cls"}
    bal = fit_probe("classification", data["feats"], y, ProbeConfig(class_weights="balanced", **kw))
    none = fit_probe("classification", data["feats"], y, ProbeConfig(class_weights="none", **kw))
    assert bal.oof_predictions[y == 1].mean() > none.oof_predictions[y == 1].mean() + 0.1


def test_save_load_identical_predictions_and_json(binary_fit, data, tmp_path):
    probe = binary_fit.probe
    probe.backbone = {"id": "tiny", "revision": "r1", "sha256": "ab" * 32}
    st, js = save_probe(probe, tmp_path / "p")
    assert st.name == "p.safetensors" and js.name == "p.json"
    meta = json.loads(js.read_text())
    assert meta["format_version"] == 2 and meta["task"] == "classification" and meta["pooling"] == "cls"
    assert meta["type"] == "voxelfm-probe" and meta["weights"]["file"] == "p.safetensors"
    assert meta["backbone"]["sha256"] == "ab" * 32 and meta["targets"] == ["label"]
    assert meta["metrics"]["auc"]["ci95"][0] is not None
    again = load_probe(tmp_path / "p.json")
    np.testing.assert_array_equal(probe.predict(data["feats"][:20]), again.predict(data["feats"][:20]))
    assert again.predict_one(data["feats"][0]) == pytest.approx(probe.predict(data["feats"][:1])[0], abs=0)


def test_save_load_attentive_and_regression(tmp_path, data):
    feats, y = lesion_tokens(n=40, c=8, grid=(2, 2, 3), seed=1)
    cfg = ProbeConfig(head="attentive", folds=2, n_bootstrap=0, knn_k=0, max_epochs=5)
    probe = fit_probe("classification", feats, y, cfg).probe
    save_probe(probe, tmp_path / "att")
    np.testing.assert_array_equal(probe.predict(feats), load_probe(tmp_path / "att").predict(feats))
    reg = fit_probe(
        "regression", data["feats"], data["value"], ProbeConfig(n_bootstrap=0, knn_k=0, pooling="cls")
    )
    save_probe(reg.probe, tmp_path / "reg")
    np.testing.assert_array_equal(
        reg.probe.predict(data["feats"]), load_probe(tmp_path / "reg").predict(data["feats"])
    )


def test_tampered_weights_are_rejected(binary_fit, tmp_path):
    from voxelfm.errors import IntegrityError

    st, _ = save_probe(binary_fit.probe, tmp_path / "p")
    st.write_bytes(st.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(IntegrityError, match="sha256"):
        load_probe(tmp_path / "p")


@pytest.mark.parametrize("task", ["classification", "regression", "survival"])
def test_reports_written(task, data, tmp_path):
    target = {"classification": data["binary"], "regression": data["value"], "survival": data["surv"]}[task]
    r = fit_probe(task, data["feats"], target, ProbeConfig(n_bootstrap=50, pooling="cls"))
    rj, rp = write_report(r, tmp_path / "probe", ids=[f"case{i}" for i in range(120)])
    rep = json.loads(rj.read_text())
    assert len(rep["out_of_fold"]) == 120 and rep["out_of_fold"][0]["id"] == "case0"
    assert rp.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rp.stat().st_size > 5000
    if task == "survival":
        km = rep["kaplan_meier"]
        assert km["low_risk"]["survival"][-1] > km["high_risk"]["survival"][-1]  # low risk survives longer


def test_progress_and_cancel(data):
    import threading

    from voxelfm.errors import CancelledError

    seen = []
    fit_probe(
        "classification",
        data["feats"],
        data["binary"],
        ProbeConfig(n_bootstrap=0, knn_k=0, pooling="cls"),
        progress=lambda f, m: seen.append(f),
    )
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 6
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        fit_probe("classification", data["feats"], data["binary"], ProbeConfig(pooling="cls"), cancel=cancel)
