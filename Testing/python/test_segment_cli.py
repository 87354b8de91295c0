"""`voxelfm segment` end to end (tiny random backbone), probe files, folders, bad inputs, real geometry."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_segment_core import planted_case

from voxelfm.cli.main import main
from voxelfm.imaging.io import read_volume, write_labelmap, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.segment.labels import UNLABELLED, labelled_voxels, select_slices


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(0)
    return save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), tmp_path_factory.mktemp("tiny")
    )


@pytest.fixture()
def case_files(tmp_path):
    vol, _, truth = planted_case()
    ct = write_volume(vol, tmp_path / "ct.nii.gz")
    lab = write_labelmap(select_slices(truth, [14, 20, 26]), vol.ijk_to_ras, tmp_path / "labels.nii.gz")
    return ct, lab, truth


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_segment_fit_save_and_apply(tmp_path, tiny_model, case_files):
    ct, lab, truth = case_files
    before = _sha(lab)
    out = tmp_path / "out.nii.gz"
    rc = main(
        [
            "segment",
            str(ct),
            "--labels",
            str(lab),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--save-probe",
            str(tmp_path / "probe"),
            "--class-names",
            "left,right",
        ]
    )
    assert rc == 0 and _sha(lab) == before  # the input label file is never modified
    seg = read_volume(str(out), check_hu=False)
    assert seg.array.shape == truth.shape
    assert set(np.unique(seg.array).astype(int)) <= {0, 1, 2}
    np.testing.assert_allclose(seg.ijk_to_ras, read_volume(str(ct)).ijk_to_ras, atol=1e-5)
    meta = json.loads((tmp_path / "probe.json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["left", "right"]
    assert meta["backbone"]["sha256"] and meta["preprocessing"] and meta["task"] == "segmentation"

    # the painted-slices workflow (0 everywhere unpainted) gives the same labels as the explicit 255 file
    lab_arr = read_volume(str(lab), check_hu=False).array
    painted = write_labelmap(
        np.where(lab_arr == UNLABELLED, 0, lab_arr), seg.ijk_to_ras, tmp_path / "painted.nrrd"
    )
    out_p = tmp_path / "out_painted.nii.gz"
    assert (
        main(
            [
                "segment",
                str(ct),
                "--labels",
                str(painted),
                "--painted-slices",
                "--out",
                str(out_p),
                "--model",
                str(tiny_model),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(read_volume(str(out_p), check_hu=False).array, seg.array)

    # apply the saved probe: same image -> same labels; .seg.nrrd carries names and colours
    out2 = tmp_path / "again.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(ct),
                "--probe",
                str(tmp_path / "probe"),
                "--out",
                str(out2),
                "--model",
                str(tiny_model),
            ]
        )
        == 0
    )
    img = sitk.ReadImage(str(out2))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), seg.array.astype(np.uint8))
    assert img.GetMetaData("Segment1_Name") == "right" and img.GetMetaData("Segment1_LabelValue") == "2"

    # ... and over a folder of images
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(2):
        (folder / f"case{n}.nii.gz").write_bytes(ct.read_bytes())
    assert (
        main(
            [
                "segment",
                str(folder),
                "--probe",
                str(tmp_path / "probe.json"),
                "--out",
                str(tmp_path / "res"),
                "--model",
                str(tiny_model),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["case0_seg.nii.gz", "case1_seg.nii.gz"]


def test_segment_bad_labels_exit_2(tmp_path, tiny_model, case_files, capsys):
    ct, _, truth = case_files
    empty = write_labelmap(
        np.full(truth.shape, UNLABELLED, np.uint8), read_volume(str(ct)).ijk_to_ras, tmp_path / "empty.nii.gz"
    )
    rc = main(
        [
            "segment",
            str(ct),
            "--labels",
            str(empty),
            "--out",
            str(tmp_path / "o.nii.gz"),
            "--model",
            str(tiny_model),
        ]
    )
    assert rc == 2 and "no labelled voxels" in capsys.readouterr().err
    rc = main(["segment", str(ct), "--labels", str(empty), "--out", str(tmp_path / "o.png")])
    assert rc == 2 and "--out must end with" in capsys.readouterr().err


def test_chest_dicom_flipped_label_grid(data_dir):
    """The chest labels have a flipped y axis: mapped labels must match an independent SimpleITK resampling."""
    case = data_dir / "totalseg" / "chest_dicom"
    vol = read_volume(str(case / "dicom"))
    lab_img = sitk.ReadImage(str(case / "labels.nii.gz"))
    lab = read_volume(lab_img, check_hu=False)
    assert not np.allclose(lab.ijk_to_ras, vol.ijk_to_ras)  # really a different grid
    sparse = select_slices(lab.array.astype(np.uint8), [4, 10, 15], classes=[52, 32])  # aorta, T12
    lv = labelled_voxels(sparse, lab.ijk_to_ras, vol.array.shape, vol.ijk_to_ras)
    from voxelfm.imaging.io import volume_to_sitk

    ref = sitk.Resample(
        lab_img,
        volume_to_sitk(Volume(vol.array, vol.ijk_to_ras)),
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
    )
    truth = sitk.GetArrayFromImage(ref)
    got = truth[lv.kji[:, 0], lv.kji[:, 1], lv.kji[:, 2]]
    mapping = np.array([0, 52, 32])
    assert (mapping[lv.cls] == np.where(np.isin(got, [52, 32]), got, 0)).mean() > 0.999
    assert lv.counts[1] == int((lab.array[[4, 10, 15]] == 52).sum())


@pytest.mark.slow
def test_oblique_real_volume_same_result(data_dir, tiny_model):
    """The abdomen CT given an oblique direction matrix (labels too) segments like the axis-aligned one.

    The oblique grid is resampled onto the nearest axis-aligned grid before the backbone (imaging.canonical), so
    the two runs see interpolated copies of each other: 97.8% of the voxels agree (measured), not all."""
    from voxelfm import load_backbone
    from voxelfm.features.extract import extract_features
    from voxelfm.segment import SegmentationConfig, fit_segmentation
    from voxelfm.segment.metrics import dice

    case = data_dir / "totalseg" / "abdomen_3mm"
    vol = read_volume(str(case / "ct.nii.gz"))
    ref = read_volume(str(case / "labels.nii.gz"), check_hu=False).array.astype(np.uint8)
    sparse = select_slices(ref, [8, 15, 22], classes=[5])  # liver
    model = load_backbone(tiny_model)
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])
    results = []
    for m in (vol.ijk_to_ras, rot @ vol.ijk_to_ras):
        v = Volume(vol.array, m)
        feats = extract_features(v, model, cache=False, device="cpu")
        probe = fit_segmentation(v, feats, Volume(sparse, m), SegmentationConfig())
        results.append(probe.predict(v, feats, with_probabilities=False).labelmap)
    assert (results[0] == results[1]).mean() > 0.95
    assert dice(results[1] == 1, ref == 5) > 0.7


def test_pipeline_refit_reuses_features_and_records_spacing(tiny_model):
    from voxelfm.features.service import FeatureService, ModelSpec
    from voxelfm.segment import SegmentationConfig, SegmentationPipeline, SegmentClass

    vol, _, truth = planted_case()
    service = FeatureService()
    pipeline = SegmentationPipeline(
        ModelSpec(str(tiny_model), device="cpu"), SegmentationConfig(feature_spacing_mm=2.0), service=service
    )
    classes = [SegmentClass(1, "a", (1.0, 0.0, 0.0)), SegmentClass(2, "b", (0.0, 1.0, 0.0))]
    seen = []
    labels = Volume(select_slices(truth, [14, 20, 26]), vol.ijk_to_ras)
    out = pipeline.fit(vol, labels, classes, progress=lambda f, m: seen.append(m))
    ctx = pipeline._context
    assert out.labelmap.shape == truth.shape and out.probe.class_names == ["a", "b"]
    assert out.probe.config.feature_spacing_mm == 2.0 and seen[-1] == "done"
    # features were extracted on the 2 mm resampling, not on the 1.5 x 1.5 x 2 mm grid
    assert np.allclose(np.linalg.norm(ctx.features.prepared_to_ras[:3, :3], axis=0), 2.0, atol=0.05)
    out2 = pipeline.fit(vol, Volume(select_slices(truth, [20]), vol.ijk_to_ras), classes)  # repainted
    assert pipeline._context is ctx and out2.labelmap.shape == truth.shape and service.loads == 1


def test_seg_nrrd_reads_in_slicer(tmp_path, mrml_scene):
    from voxelfm.segment.classes import SegmentClass
    from voxelfm.segment.files import write_seg_nrrd

    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1:3, 1:4, 1:5] = 1
    lab[3, 0, 0] = 2
    m = np.diag([-0.8, -0.8, 2.0, 1.0])
    path = write_seg_nrrd(
        lab,
        m,
        tmp_path / "x.seg.nrrd",
        [SegmentClass(1, "liver", (1.0, 0.0, 0.0)), SegmentClass(2, "aorta", (0, 0, 1.0), "T^aorta~x")],
    )
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(seg)
    s = seg.GetSegmentation()
    assert [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())] == ["liver", "aorta"]
    assert s.GetNthSegment(1).GetColor() == (0.0, 0.0, 1.0)
    assert s.GetNthSegment(1).GetTerminology() == "T^aorta~x"  # terminology survives the file
