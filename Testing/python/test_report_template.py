"""Report templates: the shipped chest CT default, users' own copies, and clear load-time errors."""

from __future__ import annotations

import shutil

import pytest
import yaml

from voxelfm.errors import InputError
from voxelfm.report.catalog import SECTIONS
from voxelfm.report.template_files import list_templates, load_template, templates_dir


def test_default_is_chest_ct_with_the_eight_sections():
    t = load_template()
    assert t.name == "chest_ct" and "chest_ct" in list_templates()
    assert (
        t.section_names
        == SECTIONS
        == (
            "Lungs",
            "Heart",
            "Gastrointestinal",
            "Liver",
            "Spleen",
            "Kidneys",
            "Bones",
            "Other",
        )
    )
    assert t.section_for_finding("Cardiomegaly") == "Heart"
    assert t.section_for_finding("hiatal_hernia") == "Gastrointestinal"
    assert t.section_for_finding("my own finding") == "Other"
    for segment, section in (
        ("lung_upper_lobe_left", "Lungs"),
        ("Nodule 1", "Lungs"),
        ("liver", "Liver"),
        ("kidney_right", "Kidneys"),
        ("vertebrae_L1", "Bones"),
        ("aorta", "Heart"),
        ("spleen", "Spleen"),
        ("thyroid", "Other"),
    ):
        assert t.section_for_segment(segment) == section, segment
    assert (
        t.finding_sentence("Pleural effusion", "uncertain", 0.5)
        == "Possible pleural effusion (probability 0.50)."
    )


def _copy(tmp_path, edit):
    raw = yaml.safe_load((templates_dir() / "chest_ct.yaml").read_text())
    edit(raw)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_users_copy_with_its_own_sections_loads(tmp_path):
    def edit(raw):
        raw["name"] = "short"
        raw["sections"] = [
            {"name": "Thorax", "findings": ["Lung nodule", "Cardiomegaly"], "segments": ["*"]},
            {"name": "Elsewhere"},
        ]
        raw["sentences"]["present"] = "{Phrase}: {percent:.0f}%."

    t = load_template(_copy(tmp_path, edit))
    assert t.section_names == ("Thorax", "Elsewhere")
    assert t.section_for_finding("Cardiomegaly") == "Thorax"
    assert (
        t.section_for_finding("Emphysema") == "Elsewhere"
    )  # catalogue section 'Lungs' is not in this template
    assert t.section_for_segment("liver") == "Thorax"
    assert t.finding_sentence("Lung nodule", "present", 0.873) == "Lung nodule: 87%."
    shutil.copy(_copy(tmp_path, edit), tmp_path / "again.yml")
    assert load_template(tmp_path / "again.yml").name == "short"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["sentences"].update(present="{Phrase} with {size} mm."), r"unknown field\(s\) \{size\}"),
        (lambda r: r["sentences"].update(measurement="{segment} {volume}"), r"unknown field\(s\) \{volume\}"),
        (lambda r: r.update(heading="{section_name}:"), r"'heading' uses unknown field"),
        (lambda r: r["sentences"].update(present="{probability:.2q}"), "bad format"),
        (lambda r: r["sentences"].update(present="{Phrase"), "write a literal brace"),
        (lambda r: r.update(colour="red"), r"unknown key\(s\) colour"),
        (lambda r: r["sentences"].update(maybe="x"), r"sentences: unknown key\(s\) maybe"),
        (lambda r: r["sections"][0].update(findngs=["Emphysema"]), r"section 1 \(Lungs\): unknown key"),
        (lambda r: r.update(sections=[]), "at least one section"),
        (lambda r: r.update(thresholds={"present": 0.3, "absent": 0.5}), "absent <= present"),
        (lambda r: r["sections"].append({"name": "Lungs"}), "section names repeat"),
    ],
)
def test_template_problems_fail_at_load_time(tmp_path, edit, message):
    with pytest.raises(InputError, match=message) as err:
        load_template(_copy(tmp_path, edit))
    assert "mine.yaml" in str(err.value)  # the message names the file


def test_unknown_template_names_the_shipped_ones(tmp_path):
    with pytest.raises(InputError, match="shipped templates: .*chest_ct"):
        load_template("abdomen_mri")
    with pytest.raises(InputError, match="not found"):
        load_template(tmp_path / "missing.yaml")
