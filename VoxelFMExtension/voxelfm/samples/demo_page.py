"""The tour's one page, ``index.html``: every picture with its title, its numbers and what the result means.

Plain HTML with relative links to the pictures beside it, so the folder can be opened, copied or zipped as is.
A small script records, once the page has loaded, how many pictures loaded (``data-pictures-loaded`` on
``<body>``), so a headless browser can check the page as a person would see it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_write_text

PARTS = ("features", "segmentation", "landmarks", "retrieval", "report")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-top: 1px solid #ccc; padding-top: 0.8em; }
img { max-width: 100%; border: 1px solid #bbb; }
.meaning { background: #eef5ee; border-left: 4px solid #3a3; padding: 0.5em 0.8em; }
.model { background: #f6f0e0; border-left: 4px solid #c90; padding: 0.5em 0.8em; }
code, pre { background: #f3f3f3; } pre { padding: 0.6em; white-space: pre-wrap; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }
"""

CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-pictures-loaded", ok + " of " + imgs.length);
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _picture(files: dict[str, Path], key: str, out: Path, alt: str) -> str:
    path = files.get(key)
    if path is None:
        return ""
    return f'<p><img src="{_e(Path(path).relative_to(out).as_posix())}" alt="{_e(alt)}"></p>'


def _files(files: dict[str, Path], keys: list[str], out: Path) -> str:
    names = [f"<code>{_e(Path(files[k]).relative_to(out).as_posix())}</code>" for k in keys if k in files]
    return f"<p>Files: {', '.join(names)}</p>" if names else ""


def _section(part: str, title: str, body: str) -> str:
    return f'<section id="{part}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _model_note(s: dict[str, Any]) -> str:
    model = s.get("model") or {}
    mid = model.get("id", "?")
    weak = (
        " <b>voxelfm-tiny is a small offline model, much weaker than the official weights</b>: the numbers below"
        " show what the code does, not how good VoxelFM is. With the official weights cached"
        " (<code>voxelfm models</code> says how), the same command uses them."
        if mid == "voxelfm-tiny"
        else ""
    )
    return (
        f'<p class="model">Model: <b>{_e(mid)}</b> ({_e(s.get("model_choice", ""))}).{weak}</p>'
        f"<p>Sample data: {_e(s.get('case', ''))} and lung2 from the same archive.</p>"
    )


def _features(s: dict[str, Any], files: dict[str, Path], out: Path) -> str:
    grid = " x ".join(map(str, s.get("feature_grid", [])))
    return _section(
        "features",
        "1. Features and their PCA",
        _picture(files, "features_png", out, "CT and PCA colours of its features")
        + f"<p>One feature vector per 14-voxel cube of the resampled CT: a grid of {_e(grid)} vectors, each"
        " mapped back to the CT's millimetres (<code>grid_to_ras</code>).</p>"
        '<p class="meaning">What it means: the colours follow anatomy (lung, mediastinum, bone, body wall) without'
        " any labels. Every other capability on this page is a light model on top of these frozen features.</p>"
        + _files(files, ["features"], out)
        + "<p>Yourself: <code>voxelfm features CT.nrrd --out features.npz --png pca.png</code>;"
        " in Slicer: <b>VoxelFM Features</b>.</p>",
    )


def _segmentation(s: dict[str, Any], files: dict[str, Path], out: Path) -> str:
    unl = s.get("dice_unlabelled_slices")
    unl_text = "n/a" if unl is None else f"{unl:.2f}"
    return _section(
        "segmentation",
        "2. Few-shot tumour segmentation",
        _picture(files, "overlay_png", out, "labelled slice, prediction and reference")
        + f"<p>Labelled: axial slice(s) {_e(s.get('labelled_axial_slices'))} (the nodule's label on that slice"
        f" only). Dice against the full reference label: <b>{s.get('dice_all_slices', 0):.2f}</b> on all slices,"
        f" <b>{unl_text}</b> on the slices never labelled. Volume: predicted {s.get('predicted_ml', 0):.2f} ml,"
        f" reference {s.get('reference_ml', 0):.2f} ml.</p>"
        '<p class="meaning">What it means: from one painted slice a probe on the features found the nodule on'
        " the neighbouring slices (Dice 1 = perfect overlap, 0 = none). Painting a few more slices, or better"
        " weights, raises it.</p>"
        + _files(files, ["segmentation", "seg_nrrd"], out)
        + "<p>Yourself: <code>voxelfm segment CT.nrrd --labels painted.nrrd --out seg.seg.nrrd</code>;"
        " in Slicer: <b>VoxelFM Segment</b>.</p>",
    )


def _landmarks(s: dict[str, Any], files: dict[str, Path], out: Path) -> str:
    lm = s.get("landmarks") or {}
    rows = "".join(
        f"<tr><td>{_e(p['name'])}</td><td>{p['error_mm']:.1f}</td><td>{p['confidence']:.2f}</td></tr>"
        for p in lm.get("points", [])
    )
    return _section(
        "landmarks",
        "3. Landmark transfer to a moved and cropped scan",
        _picture(files, "landmarks_png", out, "landmarks given on lung1 and found in the moved copy")
        + f"<p>The target is {_e(lm.get('copy', ''))}, so the true place of every point is known. Points given on"
        " lung1: the nodule centre (from its label) and centroids of bone in parts of the middle slice.</p>"
        f"<table><tr><th>landmark</th><th>error (mm)</th><th>confidence</th></tr>{rows}</table>"
        f"<p>Median error <b>{lm.get('median_error_mm', 0):.1f} mm</b>, largest"
        f" <b>{lm.get('max_error_mm', 0):.1f} mm</b> (the CT's slices are 5 mm apart).</p>"
        '<p class="meaning">What it means: points marked once on one scan are found again in another scan of'
        " any position and field of view, by matching features; the confidence says how sure each match is."
        " With the weak offline model a point can land centimetres off for other crops or rotations of the"
        " copy (a low confidence warns of it); the official weights are expected to do far better.</p>"
        + _files(files, ["landmarks_given", "landmarks_found", "landmarks_truth", "moved_copy"], out)
        + "<p>Yourself: <code>voxelfm localize TARGET.nrrd --reference REF.nrrd REF.mrk.json --out"
        " found.mrk.json</code>; in Slicer: <b>VoxelFM Localize</b>.</p>",
    )


SAME_PATIENT = "lung1_moved"  # the library's copy of the query's own scan


def same_patient_rank(hits: list[dict[str, Any]]) -> int | None:
    """1-based rank of the query's own (moved and cropped) scan among ``hits``; None when absent."""
    ids = [h["case_id"] for h in hits]
    return ids.index(SAME_PATIENT) + 1 if SAME_PATIENT in ids else None


def same_patient_sentence(r: dict[str, Any]) -> str:
    """What the whole-volume ranking shows, said as it came out (never a claim the numbers do not back)."""
    rank = same_patient_rank(r.get("whole_volume", []))
    if rank == 1:
        return "the scan of the same patient (moved and cropped) ranks first."
    return (
        f"the scan of the same patient (moved and cropped) ranks {rank if rank else 'nowhere'} of"
        f" {len(r.get('whole_volume', []))}, not first: the bundled offline model's pooled features of two chest"
        " CTs are nearly alike, and a rotation and crop move a scan about as far as another patient (measured in"
        " Testing/Benchmarks/results/retrieval_quality.md, part D). This ranking is not reliable with this model;"
        " the official weights could not be tested here."
    )


def _retrieval(s: dict[str, Any], files: dict[str, Path], out: Path) -> str:
    r = s.get("retrieval") or {}
    whole = ", ".join(f"{_e(h['case_id'])} {h['score']:.3f}" for h in r.get("whole_volume", []))
    region = ", ".join(f"{_e(h['case_id'])} {h['score']:.3f}" for h in r.get("nodule_region", []))
    err = r.get("nodule_region_top_hit_error_mm")
    err_text = (
        ""
        if err is None
        else f" Its best-matching block lies <b>{err:.1f} mm</b> from the nodule's true place."
    )
    return _section(
        "retrieval",
        "4. Similar cases: a small case library and queries",
        _picture(files, "retrieval_png", out, "query and the most similar cases with their scores")
        + "<p>Library: lung2, a moved copy of lung1 and a moved copy of lung2 (each with a short report written"
        f" from its label). Query lung1, whole volume: {whole}. Query a {30:g} mm box around lung1's nodule:"
        f" {region}.{err_text}</p>"
        + f'<p class="meaning">What it means: {same_patient_sentence(r)} A region query also says <i>where</i>'
        " in each case the most similar place is. Scores are cosine similarities (1 = identical):"
        " whole-volume ones of pooled features standardised with the library's token statistics (below 0 = less"
        " alike than the average case), region ones of blocks of features minus each case's own mean.</p>"
        + "<p>Yourself: <code>voxelfm index add LIBRARY CT_FOLDER/</code>, then <code>voxelfm query LIBRARY"
        " CT.nrrd -k 5</code>; in Slicer: <b>VoxelFM Retrieve</b>.</p>",
    )


def _number(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_number(v) for v in value) + ")"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _evidence_text(e: dict[str, Any]) -> str:
    kind = e.get("kind")
    if kind == "measurement":
        quantity = str(e.get("quantity", "")).replace("_", " ")
        return (
            f"measured on segment '{e.get('segment')}': {quantity} {_number(e.get('value'))} {e.get('unit')}"
        )
    if kind == "neighbour":
        return (
            f"similar case {e.get('case_id')} (similarity {float(e.get('score', 0)):.3f}, weight"
            f' {float(e.get("weight", 0)):.2f}) says: "{e.get("sentence", "")}"'
        )
    return json.dumps(e)


def _report(s: dict[str, Any], files: dict[str, Path], out: Path) -> str:
    rep = s.get("report") or {}
    rows = "".join(
        f"<tr><td>{_e(x['section'])}</td><td>{_e(x['text'])}</td><td>"
        + "<br>".join(_e(_evidence_text(e)) for e in x.get("evidence", []))
        + "</td></tr>"
        for x in rep.get("sentences", [])
    )
    warnings = "".join(f"<li>{_e(w)}</li>" for w in rep.get("warnings", []))
    return _section(
        "report",
        "5. Report draft with its evidence",
        f"<pre>{_e(rep.get('text', ''))}</pre>"
        f"<table><tr><th>section</th><th>sentence</th><th>evidence</th></tr>{rows}</table>"
        + (f"<p>Warnings:</p><ul>{warnings}</ul>" if warnings else "")
        + '<p class="meaning">What it means: a draft for a radiologist to edit, never a diagnosis. Each sentence'
        " names where it comes from: a measurement of the segmentation above, or what the reports of the most"
        " similar other cases agree on (lung1's own copy is left out). A similar case's sentence may not fit this"
        " patient (here lung2's mass is not lung1's nodule): the evidence says which sentence to check.</p>"
        + _files(files, ["report_json", "report_txt"], out)
        + "<p>Yourself: <code>voxelfm report LIBRARY CT.nrrd --segmentation seg.seg.nrrd --json</code>;"
        " in Slicer: <b>VoxelFM Report</b>.</p>",
    )


def write_page(out: Path, summary: dict[str, Any], files: dict[str, Path]) -> Path:
    out = Path(out)
    timings = ", ".join(
        f"{k[:-2].replace('_', ' ')} {v:.0f} s" for k, v in summary.get("timings_s", {}).items()
    )
    body = "\n".join(
        [
            "<h1>VoxelFM tour on the sample chest CTs</h1>",
            _model_note(summary),
            '<p>Parts: <a href="#features">features</a> · <a href="#segmentation">segmentation</a> ·'
            ' <a href="#landmarks">landmarks</a> · <a href="#retrieval">similar cases</a> ·'
            ' <a href="#report">report</a></p>',
            _features(summary, files, out),
            _segmentation(summary, files, out),
            _landmarks(summary, files, out),
            _retrieval(summary, files, out),
            _report(summary, files, out),
            f"<p><small>Times: {_e(timings)}. All numbers: <code>summary.json</code>.</small></p>",
        ]
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>VoxelFM tour</title>'
        f"<style>{STYLE}</style><script>{CHECK}</script></head>\n<body>\n{body}\n</body></html>\n"
    )
    return atomic_write_text(out / "index.html", page)
