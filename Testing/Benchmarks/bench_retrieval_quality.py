"""Similar-case retrieval quality on the real CT here, before and after canonical orientation + the pooling choice.

"before" = the stored array order, features at the model's own spacing, every token mean-pooled, plain cosine
(RetrievalConfig(pooling="mean", centring="none", feature_spacing_mm=None), FeatureOptions(orientation="stored"));
"body_mean_std" = the previous defaults (canonical LPS index order, features at 2 mm, mean + std of the body
cells' tokens, library-centred cosine); "after" = the defaults (the same features; the body tokens standardised
with the library's token statistics, described by mean and library-centred std, plain cosine: pooling
"body_standardised", retrieval/standardise.py). Both models: voxelfm-tiny and the same architecture at an independent
random init (seed 1). CTs are used at 3 mm or finer (thin ones at 1/20 of their thinnest side) to keep the run
to a few minutes on two cores.

A. Region crops (the paper's protocol). Patients with reference labels (../shared/data/totalseg): abdomen_3mm and
   chest_dicom, pulmonary_1p5mm as distractors (torso_3mm is abdomen_3mm's patient and is left out). For every
   labelled structure a cube of --crop-mm mm is centred on its innermost voxel. A query is one patient's crop of a
   structure; the pool is every crop of the OTHER patients; the positive is the same structure there.
   Macro Recall@1/5/10 over structures with 95% bootstrap CIs. Rows: the crop as a volume (whole-volume vector),
   the region query (the crop's box in the whole CT, pooled as the library's blocks), an intensity histogram.
B. Altered copies. A library of the seven distinct dev CTs (RetrievalPipeline, in-memory volumes); each CT
   altered six ways (flip of i, j, k storage; a covering 20-degree oblique grid; crop + 25 HU noise; 1.25x
   coarser voxels: retrieval_helpers.altered) queries it. Reported per alteration: copies whose source is at
   rank 1; the margin = score of the source - best score of another case (median, min; > 0 = rank 1); and a
   60 mm region query at the body centre of each copy (rank of the source, distance of its best block).
   A second table compares candidate poolings/scorings on the same features (after orientation).
C. Those candidates on the copies of B (with the standardised ones: token statistics of the library's cases). D. The same candidates with `voxelfm demo`'s moved copy of each dev CT
   (8-degree rotation about S, shift, crop to 80% of each axis = half the volume) as the query.

    python Testing/Benchmarks/bench_retrieval_quality.py --out Testing/Benchmarks/results/retrieval_quality.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "VoxelFMExtension"))
sys.path.insert(0, str(ROOT / "Testing" / "python"))

PATIENTS = {"abdomen": "totalseg/abdomen_3mm", "chest": "totalseg/chest_dicom"}
DISTRACTORS = {"pulmonary": ["heart.nii.gz", "pulmonary_artery.nii.gz"]}
ALTERED_CTS = {
    "torso": "totalseg/torso_3mm/ct.nii.gz",
    "pulmonary": "totalseg/pulmonary_1p5mm/ct.nii.gz",
    "chest": "totalseg/chest_dicom/dicom",
    "elastix": "public_ct/elastix_lung_small/3DCT_lung_baseline_small.mha",
    "lung_pet": "public_ct/lung_pet_ct_dx_a0002.nii.gz",
    "popi": "public_ct/popi_phase00_chest.nii.gz",
    "lidc": "public_ct/lidc_idri_0314_chest.nii.gz",
}


# ---------------------------------------------------------------- data


def labelled_patient(data: Path, folder: str):
    """(CT volume, {structure name: mask on the CT grid})."""
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.resample import resample_to_grid

    base = data / folder
    ct = read_volume(str(base / ("dicom" if (base / "dicom").is_dir() else "ct.nii.gz")))
    lab = read_volume(str(base / "labels.nii.gz"), check_hu=False)
    names = json.loads((base / "labels.json").read_text())
    on_ct = resample_to_grid(lab.array, lab.ijk_to_ras, ct.array.shape, ct.ijk_to_ras, mode="nearest")
    return ct, {name: on_ct == int(v) for v, name in names.items() if (on_ct == int(v)).sum() >= 20}


def distractor_patient(data: Path):
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.resample import resample_to_grid

    base = data / "totalseg/pulmonary_1p5mm"
    ct = read_volume(str(base / "ct.nii.gz"))
    masks = {}
    for f in DISTRACTORS["pulmonary"]:
        m = read_volume(str(base / f), check_hu=False)
        masks[f.split(".")[0]] = (
            resample_to_grid(m.array, m.ijk_to_ras, ct.array.shape, ct.ijk_to_ras, "nearest") > 0
        )
    return ct, masks


def innermost(ct, mask) -> np.ndarray:
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask, sampling=ct.spacing[::-1])
    k, j, i = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return (ct.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


def crop_volume(ct, centre: np.ndarray, side_mm: float):
    """The voxels of ``ct`` in a cube of ``side_mm`` around ``centre``, moved inside the volume where it would
    stick out (and as thick as the volume where it is thinner)."""
    from voxelfm.imaging.resample import shift_matrix
    from voxelfm.imaging.volume import Volume

    ijk = (np.linalg.inv(ct.ijk_to_ras) @ np.array([*centre, 1.0]))[:3]
    n = np.asarray(ct.shape_ijk)
    size = np.minimum(np.ceil(side_mm / ct.spacing).astype(int), n)  # voxels along i, j, k
    lo = np.clip(np.rint(ijk - size / 2).astype(int), 0, n - size)
    hi = lo + size
    arr = ct.array[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    return Volume(np.ascontiguousarray(arr), ct.ijk_to_ras @ shift_matrix(lo[::-1]), "crop")


# ---------------------------------------------------------------- embeddings


def histogram(volume) -> np.ndarray:
    h, _ = np.histogram(np.clip(volume.array, -1000, 1000), bins=32, range=(-1000, 1000))
    h = h.astype(np.float64)
    return h / max(np.linalg.norm(h), 1e-12)


def small(volume, finest_mm: float = 3.0):
    """``volume`` at ``finest_mm`` (or at 1/20 of its thinnest side when that is finer), isotropic."""
    from voxelfm.imaging.resample import resample_isotropic

    target = min(finest_mm, float(np.min(np.asarray(volume.shape_ijk) * volume.spacing)) / 20)
    return volume if np.allclose(volume.spacing, target, rtol=0.01) else resample_isotropic(volume, target)


SETTINGS = {  # label -> (orientation, RetrievalConfig overrides)
    "before": ("stored", {"pooling": "mean", "centring": "none", "feature_spacing_mm": None}),
    "body_mean_std": ("canonical", {"pooling": "body_mean_std", "centring": "library"}),
    "after": ("canonical", {}),
}


def pipeline_for(model: str, setting: str, max_tokens: int, **extra):
    from voxelfm.features.spec import FeatureOptions, ModelSpec
    from voxelfm.retrieval.config import RetrievalConfig
    from voxelfm.retrieval.pipeline import RetrievalPipeline

    orientation, overrides = SETTINGS[setting]
    config = RetrievalConfig(**{**overrides, **extra})
    return RetrievalPipeline(
        ModelSpec(model, "cpu", max_tokens=max_tokens), config, FeatureOptions(orientation=orientation)
    )


def crop_embeddings(pipeline, crops) -> list[np.ndarray]:
    """Whole-volume vectors of the crops as the product scores them (standardised with the statistics of every
    crop for "body_standardised": the crops are the library)."""
    from voxelfm.retrieval.config import STANDARDISED
    from voxelfm.retrieval.pooling import global_vector, pooling_weights
    from voxelfm.retrieval.standardise import fit

    cfg = pipeline.config
    out, counts = [], {}
    for i, c in enumerate(crops):
        f = pipeline.features(c["volume"], pipeline.spec, cfg)
        body = pipeline.body(c["volume"], f, cfg)
        out.append(global_vector(f, cfg, body))
        counts[i] = float(pooling_weights(f, cfg, body).sum())
    if cfg.pooling != STANDARDISED:
        return out
    stats, _ = fit(lambda: [(np.array(out), np.arange(len(out)))], counts)
    return list(stats.embed(np.array(out)))


def region_embeddings(pipeline, crops, volumes) -> list[np.ndarray]:

    cfg = pipeline.config
    feats = {p: pipeline.features(v, pipeline.spec, cfg) for p, v in volumes.items()}
    body = {p: pipeline.body(v, feats[p], cfg) for p, v in volumes.items()}
    return crop_region_vectors(crops, feats, volumes, cfg, body)


def crop_region_vectors(crops, feats, volumes, cfg, body) -> list[np.ndarray]:
    """The region-query vector of each crop's box in its patient's whole CT."""
    from voxelfm.retrieval.embeddings import region_query
    from voxelfm.retrieval.regions import BoxRegion

    return [
        region_query(
            feats[c["patient"]],
            BoxRegion.centred(c["centre"], (c["side"],) * 3),
            volumes[c["patient"]],
            cfg,
            body[c["patient"]],
        )[0]
        for c in crops
    ]


# ---------------------------------------------------------------- protocol


def recall_table(crops, vectors, shared: set[str], ks=(1, 5, 10), boot: int = 1000, seed: int = 0):
    """Macro Recall@k over structures (query: a crop of a shared structure; pool: other patients' crops)."""
    X = np.asarray(vectors)
    per: dict[str, list[list[float]]] = {}
    for q, c in enumerate(crops):
        if c["name"] not in shared or c["patient"] == "pulmonary":
            continue
        pool = [i for i, d in enumerate(crops) if d["patient"] != c["patient"]]
        scores = X[pool] @ X[q]
        order = [pool[i] for i in np.argsort(-scores)]
        rank = next(r for r, i in enumerate(order) if crops[i]["name"] == c["name"])
        per.setdefault(c["name"], []).append([float(rank < k) for k in ks])
    names = sorted(per)
    table = np.array([np.mean(per[n], axis=0) for n in names])  # [structures, ks]
    rng = np.random.default_rng(seed)
    draws = np.array([table[rng.integers(0, len(names), len(names))].mean(0) for _ in range(boot)])
    lo, hi = np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)
    return table.mean(0), lo, hi, len(names), len(crops)


# ---------------------------------------------------------------- main


def random_init_like(model_dir: Path, out: Path) -> Path:
    import torch

    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    cfg = json.loads((model_dir / "config.json").read_text())
    # seed 1: voxelfm-tiny itself started from seed 0 and moved at most 0.03 per weight in pretraining, so a
    # seed-0 "random init" would be nearly the same network (an independent init is the fair baseline)
    torch.manual_seed(1)
    return save_backbone(
        VoxelFMBackbone(BackboneConfig.from_dict(cfg["architecture"])), out, preprocess=cfg["preprocess"]
    )


def collect_crops(data: Path, side_mm: float):
    """(whole volumes by patient, crops: patient, structure name, centre, side, volume)."""
    volumes, crops = {}, []
    sources = [(p, *labelled_patient(data, f)) for p, f in PATIENTS.items()] + [
        ("pulmonary", *distractor_patient(data))
    ]
    for patient, ct, masks in sources:
        volumes[patient] = ct  # already at 3 mm or finer (crops are 64 mm cubes)
        for name, mask in masks.items():
            centre = innermost(ct, mask)
            crops.append(
                dict(
                    patient=patient,
                    name=name,
                    centre=centre,
                    side=side_mm,
                    volume=crop_volume(ct, centre, side_mm),
                )
            )
    return volumes, crops


def scaled(f, sigma: np.ndarray):
    """``f`` with every token divided by ``sigma`` per dimension."""
    import dataclasses

    return dataclasses.replace(f, patch=(np.asarray(f.patch, dtype=np.float64) / sigma).astype(np.float32))


def standardised_region_rows(label: str, model: str, crops, volumes, shared: set[str], args) -> list:
    """Part A rows of the standardised candidates: crops as volumes (library = every crop) and region queries
    (tokens minus the case's body mean, over the library's or the case's own per-dimension std)."""
    from voxelfm.retrieval.config import RetrievalConfig

    pipe = pipeline_for(model, "after", args.max_tokens)
    cfg = pipe.config
    rows = []
    mom = []
    for c in crops:
        f = pipe.features(c["volume"], pipe.spec, cfg)
        mom.append(token_moments(f, pipe.body(c["volume"], f, cfg)))
    mu, sigma = library_moments(mom)
    for with_std in (False, True):
        vectors = [standardised(m, mu, sigma, with_std) for m in mom]
        what = "mean + std" if with_std else "mean"
        rows.append(
            (
                f"{label}: crop as a volume, standardised {what} of body tokens",
                recall_table(crops, vectors, shared, boot=args.boot),
            )
        )
    feats = {p: pipe.features(v, pipe.spec, cfg) for p, v in volumes.items()}
    body = {p: pipe.body(v, feats[p], cfg) for p, v in volumes.items()}
    own = {p: token_moments(feats[p], body[p]) for p in volumes}
    _, lib_sigma = library_moments(list(own.values()))
    variants = {
        "library std, mean + std": (lambda p: lib_sigma, cfg),
        "library std, mean": (lambda p: lib_sigma, RetrievalConfig(pooling="mean")),
        "case's own std, mean + std": (lambda p: own[p][2], cfg),
    }
    for what, (sig, vcfg) in variants.items():
        scaled_feats = {p: scaled(f, sig(p)) for p, f in feats.items()}
        vectors = crop_region_vectors(crops, scaled_feats, volumes, vcfg, body)
        rows.append(
            (
                f"{label}: region query, tokens minus case mean over {what}",
                recall_table(crops, vectors, shared, boot=args.boot),
            )
        )
    return rows


def part_a(data: Path, models: dict[str, str], args) -> list[str]:
    volumes, crops = collect_crops(data, args.crop_mm)
    names = {p: {c["name"] for c in crops if c["patient"] == p} for p in PATIENTS}
    shared = names["abdomen"] & names["chest"]
    rows = []
    for label, model in models.items():
        for setting in SETTINGS:
            pipe = pipeline_for(model, setting, args.max_tokens)
            pooled = pipe.config.pooling
            rows.append(
                (
                    f"{label}, {setting}: crop as a volume ({pooled})",
                    recall_table(crops, crop_embeddings(pipe, crops), shared, boot=args.boot),
                )
            )
            rows.append(
                (
                    f"{label}, {setting}: region query (box in the whole CT)",
                    recall_table(crops, region_embeddings(pipe, crops, volumes), shared, boot=args.boot),
                )
            )
        rows += standardised_region_rows(label, model, crops, volumes, shared, args)
    rows.append(
        (
            "intensity histogram of the crop",
            recall_table(crops, [histogram(c["volume"]) for c in crops], shared, boot=args.boot),
        )
    )
    head = ["| embedding | Recall@1 [95% CI] | Recall@5 [95% CI] | Recall@10 [95% CI] |", "|---|---|---|---|"]
    for label, (mean, lo, hi, _, _) in rows:
        cells = " | ".join(f"{m:.2f} [{a:.2f}, {b:.2f}]" for m, a, b in zip(mean, lo, hi, strict=True))
        head.append(f"| {label} | {cells} |")
    pool = len([c for c in crops if c["patient"] != "abdomen"])
    n_struct, n_crops = rows[0][1][3], rows[0][1][4]
    head.append(
        f"\n{n_struct} structures labelled in both patients (2 queries each), {n_crops} crops of "
        f"{args.crop_mm:g} mm; pool per query about {pool} crops of the other patients; chance Recall@1 "
        f"about {1 / pool:.2f}."
    )
    return head


def copy_queries(data: Path, seed: int = 3):
    """({name: CT at <= 3 mm}, {(name, alteration): altered copy})."""
    from retrieval_helpers import COPIES, altered

    from voxelfm.imaging.io import read_volume

    cts = {n: small(read_volume(str(data / r))) for n, r in ALTERED_CTS.items() if (data / r).exists()}
    copies = {(n, kind): altered(v, kind, seed=seed) for n, v in cts.items() for kind in COPIES}
    return cts, copies


def margins_row(label: str, names: list[str], scores: dict, kinds=None) -> tuple[str, list[str]]:
    """A table row from {(name, kind): {case: score}} (columns: ``kinds``, the COPIES by default); and the
    misses."""
    from retrieval_helpers import COPIES

    cells, margins, missed = [], [], []
    for kind in kinds or COPIES:
        hits = 0
        for n in names:
            s = scores[(n, kind)]
            m = s[n] - max(v for c, v in s.items() if c != n)
            margins.append(m)
            hits += m > 0
            if m <= 0:
                missed.append(f"{n} {kind}")
        cells.append(f"{hits}/{len(names)}")
    m = np.asarray(margins)
    total = f"{int((m > 0).sum())}/{m.size}"
    return f"| {label} | {' | '.join(cells)} | {total} | {np.median(m):+.3f} | {m.min():+.3f} |", missed


REGION_MM = 60.0


def body_centre(volume) -> np.ndarray:
    """RAS centroid of the body voxels (> -500 HU)."""
    k, j, i = np.nonzero(volume.array > -500)
    return (volume.ijk_to_ras @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]


def region_row(label: str, names: list[str], places: dict) -> str:
    """Region-query row: per alteration how often the source ranks first, and the median distance (mm)."""
    from retrieval_helpers import COPIES

    cells, firsts, dist = [], 0, []
    for kind in COPIES:
        n_first = 0
        for n in names:
            got = places[(n, kind)]
            best = max(got, key=lambda c: got[c][0])
            n_first += best == n
            if n in got:
                dist.append(got[n][1])
        firsts += n_first
        cells.append(f"{n_first}/{len(names)}")
    total = len(names) * len(COPIES)
    return f"| {label} | {' | '.join(cells)} | {firsts}/{total} | {np.median(dist):.0f} |"


def part_b(data: Path, models: dict[str, str], args) -> list[str]:
    from retrieval_helpers import COPIES

    from voxelfm.retrieval.regions import BoxRegion

    cts, copies = copy_queries(data)
    names = list(cts)
    head = (
        "| embedding | "
        + " | ".join(f"{k} rank-1" for k in COPIES)
        + " | all rank-1 | median margin | min margin |"
    )
    rows = [head, "|---|" + "---:|" * (len(COPIES) + 3)]
    notes: list[str] = []
    region_rows: list[str] = []
    runs = [(label, model, s, {}) for label, model in models.items() for s in SETTINGS]
    runs += [(label, model, "after", {"feature_spacing_mm": None}) for label, model in models.items()]
    with tempfile.TemporaryDirectory() as tmp:
        for n_run, (label, model, setting, extra) in enumerate(runs):
            pipe = pipeline_for(model, setting, args.max_tokens, **extra)
            lib = Path(tmp) / f"lib{n_run}"
            for n, v in cts.items():
                pipe.add_volume(lib, v, case_id=n)
            scores, places = {}, {}
            for key, copy in copies.items():
                hits = pipe.query(lib, copy, k=len(names)).hits
                scores[key] = {h.case_id: h.score for h in hits}
                centre = body_centre(cts[key[0]])
                region = BoxRegion.centred(centre, (REGION_MM,) * 3)
                hits = pipe.query(lib, copy, k=len(names), region=region).hits
                places[key] = {h.case_id: (h.score, float(np.linalg.norm(h.ras - centre))) for h in hits}
            tag = f"{label}, {setting}" + (", at the native spacing (no 2 mm features)" if extra else "")
            row, missed = margins_row(tag, names, scores)
            rows.append(row)
            notes.append(f"- {tag}: not at rank 1: {', '.join(missed) or 'none'}")
            region_rows.append(region_row(tag, names, places))
    rows += ["", *notes]
    rows += [
        "",
        f"Region queries: a {REGION_MM:g} mm box at the body centre of each altered copy (the same physical place "
        "in its source); rank-1 = the source holds the best block; distance = from the source's best block "
        "centre to the box centre (mm).",
        "",
        "| embedding | " + " | ".join(f"{k} rank-1" for k in COPIES) + " | all rank-1 | median distance mm |",
        "|---|" + "---:|" * (len(COPIES) + 2),
        *region_rows,
    ]
    rows.append(
        f"\n{len(names)} CTs in the library ({', '.join(names)}); each altered {len(COPIES)} ways = "
        f"{len(COPIES) * len(names)} queries; scores as the product reports them (`voxelfm query --json`)."
    )
    return rows


def token_moments(f, body: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
    """(count, per-dimension mean, per-dimension std) of the body cells' tokens (every token without ``body``)."""
    from voxelfm.retrieval.config import RetrievalConfig
    from voxelfm.retrieval.pooling import pooling_weights

    patch = np.asarray(f.patch, dtype=np.float64)
    t = patch.reshape(-1, patch.shape[-1])
    if body is not None:
        t = t[pooling_weights(f, RetrievalConfig(pooling="body_mean_std"), body) > 0]
    return float(len(t)), t.mean(axis=0), t.std(axis=0)


def library_moments(moments) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over every token of the cases whose ``token_moments`` these are."""
    n = np.array([m[0] for m in moments])
    mean = np.array([m[1] for m in moments])
    sq = np.array([m[2] ** 2 + m[1] ** 2 for m in moments])
    mu = (n @ mean) / n.sum()
    return mu, np.sqrt(np.maximum((n @ sq) / n.sum() - mu**2, 1e-12))


def standardised(moments, mu: np.ndarray, sigma: np.ndarray, with_std: bool) -> np.ndarray:
    """Unit vector of the standardised tokens' mean (and std, each half unit length)."""
    from voxelfm.retrieval.vector_index import normalise

    mean = normalise((moments[1] - mu) / sigma)[0]
    if not with_std:
        return mean
    return normalise(np.concatenate([mean, normalise(moments[2] / sigma)[0]]))[0]


STANDARDISED = {  # candidate name -> (tokens: body cells or all, pool the std too)
    "standardised mean of body tokens": (True, False),
    "standardised mean + std of body tokens": (True, True),
    "standardised mean of all tokens": (False, False),
    "standardised mean + std of all tokens": (False, True),
}


def candidate_rows(models: dict[str, str], args, cts: dict, copies: dict, kinds=None) -> list[str]:
    """Rows of candidate poolings x scorings: each copy queries a library of ``cts`` (vectors on the same
    canonical features, so only the embedding differs). Standardised candidates take their per-dimension
    token statistics from the library's cases (as the product does)."""
    from voxelfm.retrieval.config import RetrievalConfig
    from voxelfm.retrieval.pooling import cls_vector, global_vector
    from voxelfm.retrieval.search import centred_cosines

    names, rows = list(cts), []
    for label, model in models.items():
        pipe = pipeline_for(model, "after", args.max_tokens)
        feats = {}
        for key, v in [*((n, v) for n, v in cts.items()), *copies.items()]:
            f = pipe.features(v, pipe.spec, pipe.config)
            feats[key] = (f, pipe.body(v, f, pipe.config))
        candidates = {
            "mean of all tokens": lambda f, b: global_vector(f, RetrievalConfig(pooling="mean"), None),
            "cls token": lambda f, b: cls_vector(f, RetrievalConfig(pooling="mean")),
            "mean + std of body tokens": lambda f, b: global_vector(
                f, RetrievalConfig(pooling="body_mean_std"), b
            ),
            "mean + std of all tokens": lambda f, b: global_vector(
                f, RetrievalConfig(pooling="body_mean_std"), None
            ),
        }
        for name, (use_body, with_std) in STANDARDISED.items():
            mom = {k: token_moments(f, b if use_body else None) for k, (f, b) in feats.items()}
            mu, sigma = library_moments([mom[n] for n in names])
            candidates[name] = lambda f, b, mom=mom, mu=mu, sigma=sigma, s=with_std, fs=feats: standardised(
                mom[_key_of(fs, f)], mu, sigma, s
            )
        candidates["standardised mean + library-centred std (std 3/4 of the norm², the product's)"] = (
            product_standardised(pipe, feats, names)
        )
        for name, fn in candidates.items():
            lib = np.array([fn(*feats[n]) for n in names])
            for scoring in ("plain cosine", "library-centred"):
                centre = lib.mean(axis=0) if scoring == "library-centred" else None
                scores = {}
                for key in copies:
                    s = centred_cosines(lib, fn(*feats[key]), centre)
                    scores[key] = dict(zip(names, s.tolist(), strict=True))
                row, missed = margins_row(f"{label} | {name} | {scoring}", names, scores, kinds)
                rows.append(row + (f" {', '.join(m.split()[0] for m in missed)} |" if kinds else ""))
    return rows


def product_standardised(pipe, feats: dict, names: list[str]):
    """The product's "body_standardised" embedding (retrieval/standardise.py) with the statistics of ``names``."""
    from voxelfm.retrieval.pooling import global_vector, pooling_weights
    from voxelfm.retrieval.standardise import fit

    cfg = pipe.config
    moments = {k: global_vector(f, cfg, b) for k, (f, b) in feats.items()}
    counts = {i: float(pooling_weights(feats[n][0], cfg, feats[n][1]).sum()) for i, n in enumerate(names)}
    stats, _ = fit(lambda: [(np.array([moments[n] for n in names]), np.arange(len(names)))], counts)
    return lambda f, b: stats.embed(moments[_key_of(feats, f)])[0]


def _key_of(feats: dict, f) -> object:
    return next(k for k, (g, _) in feats.items() if g is f)


def part_c(data: Path, models: dict[str, str], args) -> list[str]:
    """Candidate poolings and scorings on the same (canonical) features: the measurement behind the choice."""
    from retrieval_helpers import COPIES

    cts, copies = copy_queries(data)
    rows = [
        "| model | embedding | scoring | "
        + " | ".join(f"{k}" for k in COPIES)
        + " | all rank-1 | median margin | min margin |",
        "|---|---|---|" + "---:|" * (len(COPIES) + 3),
    ]
    return rows + candidate_rows(models, args, cts, copies)


def part_d(data: Path, models: dict[str, str], args) -> list[str]:
    """The demo's moved copy (`voxelfm demo`: 8-degree rotation about S, shift, crop to 80% of each axis, i.e.
    half the volume) of each dev CT queries the library of the seven sources: the same candidates as C."""
    from voxelfm.samples.demo_cases import Motion, moved_copy

    cts, _ = copy_queries(data)
    copies = {(n, "demo_motion"): moved_copy(v, Motion(), f"{n}_moved")[0] for n, v in cts.items()}
    rows = [
        "| model | embedding | scoring | demo motion rank-1 | all rank-1 | median margin | min margin | "
        "not at rank 1 |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    return rows + candidate_rows(models, args, cts, copies, kinds=("demo_motion",))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default=str(ROOT / "Resources" / "models" / "voxelfm-tiny"))
    p.add_argument("--crop-mm", type=float, default=64.0)
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--parts", default="ABC", help="A (region crops), B (altered copies), C (candidates), D (demo motion)"
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    data = Path(args.data)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "voxelfm-tiny": args.model,
            "random init": str(random_init_like(Path(args.model), Path(tmp) / "rnd")),
        }
        parts = {}
        for part, fn in (("A", part_a), ("B", part_b), ("C", part_c), ("D", part_d)):
            parts[part] = fn(data, models, args) if part in args.parts else ["(not run)"]
            print("\n".join(parts[part]), flush=True)
    cmd = "python Testing/Benchmarks/bench_retrieval_quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = (
        "# Similar-case retrieval quality (real CT), before and after\n\n"
        "before = stored array order, the model's own spacing, mean of all tokens, plain cosine; body_mean_std = "
        "canonical (LPS) order, features at 2 mm, mean + std of the body cells' tokens, library-centred cosine (the "
        "previous defaults); after = the same features, the body tokens standardised with the library's token "
        "statistics and averaged, plain cosine (pooling body_standardised, the defaults).\n\n"
        "## A. Region crops: a structure of one patient against the crops of the others\n\n"
        + "\n".join(parts["A"])
        + "\n\n## B. Altered copies retrieve their source (through RetrievalPipeline)\n\n"
        + "\n".join(parts["B"])
        + "\n\n## C. Candidate embeddings on the same canonical features (the choice)\n\n"
        + "\n".join(parts["C"])
        + "\n\n## D. The demo's moved copy (rotation + shift + crop to half the volume) of each dev CT\n\n"
        + "\n".join(parts["D"])
        + f"\n\n({time.perf_counter() - t0:.0f} s on {args.threads} threads; command: {cmd})\n"
    )
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
