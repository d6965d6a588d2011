"""Dataset cards: the shipped cards on the real shared data (vb2 NIfTI volumes, Vesal PNG slices), their label
translation, partitions and the tiled 2D slice; each bad input a coded error that leaves the other cases processed,
through the serial transforms and once through the Ray Data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO_ROOT
from lss.anatomy import Structure, disc_label_for_level, label_partition, unidentified_label, vertebra_label
from lss.config import PreprocessConfig
from lss.data.adapters import build_manifest, detect_kind
from lss.data.adapters.card import DatasetCard, card_splits, discover, load_card
from lss.data.cases import load_case, read_jsonl
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import axcodes_affine, read_series, read_series_mask, read_volume, with_geometry, write_nifti
from lss.data.volume import Volume
from lss.preprocessing.pipeline import run_preprocessing
from lss.preprocessing.transforms import preprocess_study

CARDS = REPO_ROOT / "data" / "cards"
REAL = REPO_ROOT.parent / "shared" / "data" / "real"
CONFIG = PreprocessConfig()
VB2 = CARDS / "fastcleverseg_vb2.yaml"
VESAL = CARDS / "vesal_sagittal_2d.yaml"


@pytest.fixture(scope="module")
def real_data() -> Path:
    missing = [name for name in ("fastcleverseg_vb2", "vesal_sagittal_2d") if not (REAL / name).is_dir()]
    assert not missing, f"the real datasets {missing} are expected in {REAL} (shared/ beside the checkout)"
    return REAL


# -- the shipped cards on the real data ----------------------------------------------------------------------------


def test_vb2_card_discovers_17_volumes_of_vertebral_bodies(real_data: Path) -> None:
    assert detect_kind(VB2) == "card"
    records, errors = build_manifest(VB2)
    assert errors == [] and len(records) == 17
    assert records[0].study_id == "fastcleverseg_vb2_02" and records[-1].study_id == "fastcleverseg_vb2_23"
    for record in records:
        (series,) = record.series
        assert record.source == "fastcleverseg_vb2" and record.sagittal() is series
        assert series.format == "nifti" and Path(series.path).is_file() and Path(series.mask_path).is_file()
        assert Path(series.path).resolve().is_relative_to((real_data / "fastcleverseg_vb2").resolve())
        # 1 = L5 ... 7 = T11 -> the native body labels 2 ... 8 (S1 = 1).
        assert series.label_map == {v: vertebra_label(name) for v, name in
                                    enumerate(("L5", "L4", "L3", "L2", "L1", "T12", "T11"), start=1)}
        assert series.label_map == {1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 8}
        assert series.label_groups == [["vertebral_body"]]
        assert series.required_structures == ["vertebral_body"]
        assert series.labelled_span_only and series.spacing_mm is None and series.axcodes is None
    card = load_card(VB2)
    assert "GPL-3.0" in card.licence and "Zukic" in card.source and card.splits == {}


def test_vesal_card_discovers_20_slices_and_its_split(real_data: Path) -> None:
    records, errors = discover(VESAL)
    assert errors == [] and [r.study_id for r in records] == [f"vesal_sagittal_2d_{i:02d}" for i in range(20)]
    for record in records:
        series = record.sagittal()
        assert series.format == "png" and series.mask_path.endswith("_mask.png")
        assert series.label_map == {1: unidentified_label("disc"), 2: unidentified_label("vertebral_body")}
        assert series.label_map == {1: 403, 2: 401}
        assert series.label_groups == [["vertebral_body"], ["disc"]]
        assert series.required_structures == [] and series.labelled_span_only
        assert series.spacing_mm == (4.0, 1.3, 1.3) and series.axcodes == "RIP"
    card = load_card(VESAL)
    assert "MIT" in card.licence and "Vesal" in card.licence
    splits = card_splits(VESAL)
    assert splits == {"train": [f"vesal_sagittal_2d_{i:02d}" for i in range(15)],
                      "val": [f"vesal_sagittal_2d_{i:02d}" for i in range(15, 20)]}
    assert card.split_of("vesal_sagittal_2d_17") == "val" and card.split_of("vesal_sagittal_2d_03") == "train"
    with pytest.raises(ValueError, match="not a study of card"):
        card.split_of("fastcleverseg_vb2_02")


def test_spider_template_maps_whole_vertebrae_discs_and_canal(tmp_path: Path, monkeypatch) -> None:
    card = load_card(CARDS / "spider.yaml")
    assert card.label_groups == [["vertebral_body", "posterior_elements"], ["disc"], ["spinal_canal"]]
    label_map = card.label_map
    assert label_map[1] == vertebra_label("S1") and label_map[2] == vertebra_label("L5") == 2
    assert label_map[12] == unidentified_label("vertebral_body")  # T10 and above: vertebra not identified
    assert label_map[102] == 2 and label_map[100] == 100
    assert label_map[201] == disc_label_for_level("L5/S1") == 201 and label_map[202] == disc_label_for_level("L4/L5")
    assert label_map[220] == unidentified_label("disc") and len(label_map) == 25 + 1 + 25 + 25
    assert "CC BY 4.0" in card.licence and "van der Graaf" in card.source

    monkeypatch.delenv("SPIDER_ROOT", raising=False)
    with pytest.raises(StudyError, match="SPIDER_ROOT is not set") as caught:
        discover(CARDS / "spider.yaml")
    assert caught.value.code == ErrorCode.NOT_FOUND
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        for stem in ("1_t2", "2_t1"):
            _tiny_mha(tmp_path / folder / f"{stem}.mha")
    monkeypatch.setenv("SPIDER_ROOT", str(tmp_path))
    records, errors = discover(CARDS / "spider.yaml")
    assert errors == [] and [r.study_id for r in records] == ["spider_1_t2", "spider_2_t1"]
    assert records[0].series[0].mask_path == str((tmp_path / "masks" / "1_t2.mha").resolve())


def _tiny_mha(path: Path) -> None:
    from lss.data.io import write_mha

    write_mha(Volume(np.zeros((4, 5, 6), dtype=np.int16), np.diag([1.0, 1.0, 3.0, 1.0])), path)


def test_vb2_cases_preprocess_to_native_body_labels(real_data: Path) -> None:
    records = {r.study_id: r for r in discover(VB2).records}
    for study_id in ("fastcleverseg_vb2_02", "fastcleverseg_vb2_13"):
        record = records[study_id]
        raw = np.unique(read_volume(record.sagittal().mask_path).array)
        case = preprocess_study(record, CONFIG)
        arrays = case.arrays()
        assert arrays["sagittal_image"].shape == CONFIG.sagittal_shape
        values = set(np.unique(arrays["sagittal_labels"]).tolist()) - {0}
        # Every value is a native vertebral body (dataset value + 1); the crop keeps most of T11-L5.
        assert values <= {int(v) + 1 for v in raw if v} and len(values) >= 5, values
        assert values <= set(range(2, 9))
        assert arrays["label_partition"].dtype == np.int8
        assert arrays["label_partition"].tolist() == label_partition([["vertebral_body"]]).tolist() == [0, 1, 0, 0, 0]
        assert arrays["labelled_span_only"].shape == () and bool(arrays["labelled_span_only"])
        assert case.label_groups == [["vertebral_body"]] and case.info["single_slice"] is False


def test_vesal_slices_are_tiled_one_slice_volumes_with_unidentified_labels(real_data: Path) -> None:
    records = {r.study_id: r for r in discover(VESAL).records}
    record = records["vesal_sagittal_2d_02"]
    image = read_series(record.sagittal(), record.root)
    mask = read_series_mask(record.sagittal(), record.root)
    assert image.shape == (1, 256, 256) and image.axcodes() == ("R", "I", "P")
    np.testing.assert_allclose(image.spacing, (4.0, 1.3, 1.3))
    np.testing.assert_allclose(mask.affine, image.affine)
    # Pixel (0, 0) is the top left of the picture: superior and anterior (anterior is to the left).
    top_left, centre = image.world(np.array([0, 0, 0])), image.world(np.array([0, 127.5, 127.5]))
    assert top_left[1] > centre[1] and top_left[2] > centre[2]

    expected = {
        "vesal_sagittal_2d_02": ({0, 401, 403}, [["vertebral_body"], ["disc"]], [0, 1, 0, 3, 0]),
        "vesal_sagittal_2d_01": ({0, 403}, [["disc"]], [0, 0, 0, 3, 0]),  # discs only: bodies unknown here
    }
    for study_id, (values, groups, partition) in expected.items():
        case = preprocess_study(records[study_id], CONFIG)
        arrays = case.arrays()
        assert set(np.unique(arrays["sagittal_labels"]).tolist()) == values
        assert case.label_groups == groups and arrays["label_partition"].tolist() == partition
        assert case.info["single_slice"] is True and bool(arrays["labelled_span_only"])
        # The 2.5D input has real neighbours: all sagittal_shape[0] slices hold the one slice, labels too.
        sagittal, labels = arrays["sagittal_image"], arrays["sagittal_labels"]
        assert sagittal.shape == CONFIG.sagittal_shape and float(sagittal.max()) > 0.5
        for x in range(1, sagittal.shape[0]):
            np.testing.assert_array_equal(sagittal[x], sagittal[0])
            np.testing.assert_array_equal(labels[x], labels[0])
        np.testing.assert_allclose(np.linalg.norm(arrays["sagittal_affine"][:3, :3], axis=0),
                                   CONFIG.sagittal_spacing_mm)

    with pytest.raises(StudyError) as caught:  # mask 00 is empty: nothing labelled, nothing to learn
        preprocess_study(records["vesal_sagittal_2d_00"], CONFIG)
    assert caught.value.code == ErrorCode.EMPTY_LABELS


# -- readers and geometry ------------------------------------------------------------------------------------------


def test_geometry_overrides_keep_the_centre_and_apply_to_any_volume() -> None:
    affine = axcodes_affine("RIP", (4.0, 1.3, 1.3), (1, 11, 21))
    np.testing.assert_allclose(affine[:3, :3], [[4.0, 0, 0], [0, 0, -1.3], [0, -1.3, 0]])
    np.testing.assert_allclose(affine[:3, :3] @ [0, 5, 10] + affine[:3, 3], 0.0, atol=1e-9)
    shifted = np.diag([2.0, 1.0, 1.0, 1.0])
    shifted[:3, 3] = (10.0, -5.0, 7.0)
    volume = Volume(np.zeros((3, 11, 21)), shifted)
    moved = with_geometry(volume, spacing_mm=(3.0, 0.5, 0.5))
    np.testing.assert_allclose(moved.spacing, (3.0, 0.5, 0.5))
    np.testing.assert_allclose(moved.world(np.array([1, 5, 10])), volume.world(np.array([1, 5, 10])))
    assert with_geometry(volume) is volume and moved.axcodes() == volume.axcodes()
    assert with_geometry(volume, axcodes="ASR").axcodes() == ("A", "S", "R")
    with pytest.raises(ValueError, match="axcodes"):
        axcodes_affine("RRP", (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    "mode, array, expected",
    [
        ("L", np.arange(12, dtype=np.uint8).reshape(3, 4), np.arange(12).reshape(3, 4)),
        ("I;16", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4), (np.arange(12) * 5000).reshape(3, 4)),
        ("P", np.array([[0, 1, 2, 1]] * 3, dtype=np.uint8), np.array([[0, 1, 2, 1]] * 3)),
        ("RGB", np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2), np.arange(12).reshape(3, 4)),
    ],
)
def test_png_reader_modes(tmp_path: Path, mode: str, array: np.ndarray, expected: np.ndarray) -> None:
    path = tmp_path / "slice.png"
    if mode == "P":  # a label mask as palette indices, with its own colours
        picture = Image.new("P", array.shape[::-1])
        picture.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
        picture.putdata(array.ravel().tolist())
    else:
        picture = Image.fromarray(array)
    picture.save(path)
    assert Image.open(path).mode == mode
    volume = read_volume(path)
    assert volume.shape == (1, 3, 4) and volume.meta["format"] == "png" and volume.meta["view"] == "sagittal"
    np.testing.assert_array_equal(volume.array[0], expected)


def test_png_reader_errors(tmp_path: Path) -> None:
    colour = tmp_path / "colour.png"
    Image.fromarray(np.dstack([np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4))]).astype(np.uint8)).save(colour)
    signature = tmp_path / "signature.png"
    signature.write_bytes(b"\x89PNG\r\n\x1a\n")
    for path, code in ((colour, ErrorCode.UNSUPPORTED_FORMAT), (signature, ErrorCode.NOT_AN_IMAGE),
                       (tmp_path / "none.png", ErrorCode.NOT_FOUND)):
        with pytest.raises(StudyError) as caught:
            read_volume(path)
        assert caught.value.code == code and caught.value.path == str(path)


# -- card validation -----------------------------------------------------------------------------------------------

BASE = {"name": "toy", "root": ".", "image": "{id}_t2.nii.gz", "mask": "{id}_mask.nii.gz",
        "labels": {1: {"structure": "vertebral_body", "vertebra": "L5"}}}

BAD_CARDS = [
    ("unknown key", {"colour": "red"}, "colour: Extra inputs are not permitted"),
    ("unknown structure", {"labels": {1: {"structure": "kidney"}}}, "unknown structure 'kidney'"),
    ("background label", {"labels": {1: {"structure": "background"}}}, "background is mask value 0"),
    ("value 0", {"labels": {0: {"structure": "disc"}}}, "mask value 0 is the background"),
    ("unknown vertebra", {"labels": {1: {"structure": "vertebral_body", "vertebra": "L6"}}}, "unknown vertebra 'L6'"),
    ("level on a body", {"labels": {1: {"structure": "vertebral_body", "level": "L4/L5"}}}, "level applies to disc"),
    ("vertebra on a disc", {"labels": {1: {"structure": "disc", "vertebra": "L4"}}}, "vertebra applies to"),
    ("two identities", {"labels": {1: {"structure": "disc", "vertebra": "L4", "level": "L4/L5"}}}, "not both"),
    ("overlapping groups", {"labels": {1: {"structure": ["vertebral_body", "posterior_elements"]},
                                       2: {"structure": "vertebral_body"}}}, "do not partition"),
    ("range with identity", {"labels": {"1-3": {"structure": "disc", "level": "L4/L5"}}}, "cannot name one"),
    ("value twice", {"labels": {"1-3": {"structure": "disc"}, 2: {"structure": "disc"}}}, "listed twice"),
    ("two placeholders", {"image": "{id}_{seq}.nii.gz"}, "exactly one placeholder"),
    ("other placeholder", {"mask": "{case}_mask.nii.gz"}, "different placeholders"),
    ("absolute pattern", {"image": "/data/{id}.nii.gz"}, "must be relative"),
    ("no format", {"image": "{id}.jpg"}, "cannot be inferred"),
    ("mask without labels", {"labels": {}}, "needs labels"),
    ("required unlabelled", {"required": ["disc"]}, "which no label covers"),
    ("unquoted id", {"splits": {"val": [15]}}, "quote case ids"),
    ("split overlap", {"splits": {"train": ["1", "2"], "val": ["2"]}}, "in splits 'train' and 'val'"),
    ("bad regex", {"splits": {"val": {"regex": "(["}}}, "does not compile"),
    ("bad axcodes", {"geometry": {"axcodes": "RRS"}}, "axcodes"),
    ("bad name", {"name": "a b"}, "name"),
]


@pytest.mark.parametrize("name, change, message", BAD_CARDS, ids=[case[0] for case in BAD_CARDS])
def test_invalid_cards_name_the_key(tmp_path: Path, name: str, change: dict, message: str) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}, sort_keys=False))
    with pytest.raises(ValueError, match="card.yaml is not a valid dataset card") as caught:
        load_card(path)
    assert message in str(caught.value)


def test_card_naming_a_missing_root_raises(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({**BASE, "root": "nowhere"}))
    with pytest.raises(StudyError) as caught:
        discover(path)
    assert caught.value.code == ErrorCode.NOT_FOUND and caught.value.path == str(tmp_path / "nowhere")
    with pytest.raises(StudyError) as caught:
        load_card(tmp_path / "no_card.yaml")
    assert caught.value.code == ErrorCode.NOT_FOUND


# -- bad cases in a small dataset: each a coded error, the others processed ----------------------------------------

SHAPE = (6, 40, 56)  # 6 sagittal slices of 40 x 56 pixels, 4 x 1 x 1 mm, RAS


def _labels(values: tuple[int, ...], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for n, value in enumerate(values):
        mask[:, 10:30, 8 + 12 * n: 16 + 12 * n] = value
    return mask


def make_toy(root: Path) -> Path:
    """good_a (body + disc), good_b (body only: the disc is optional), and one case per problem."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([4.0, 1.0, 1.0, 1.0])
    masks = {
        "good_a": _labels((1, 2)),
        "good_b": _labels((1,)),
        "shape": _labels((1, 2), (6, 40, 50)),
        "unmapped": _labels((1, 9)),
        "empty": _labels(()),  # the body is required
        "orphan_mask": _labels((1,)),
    }
    for case_id in [*masks, "no_mask"]:
        if case_id != "orphan_mask":
            image = (rng.random(SHAPE) * 200).astype(np.float32)
            write_nifti(Volume(image, affine), data / f"case_{case_id}_t2.nii.gz")
        if case_id in masks:
            write_nifti(Volume(masks[case_id], affine), data / f"case_{case_id}_mask.nii.gz")
    card = {
        "name": "toy",
        "licence": "CC0",
        "root": "data",
        "image": "case_{id}_t2.nii.gz",
        "mask": "case_{id}_mask.nii.gz",
        "labels": {1: {"structure": "vertebral_body", "vertebra": "L5"}, 2: {"structure": "disc", "level": "L5/S1"}},
        "required": ["vertebral_body"],
        "exclude": ["ignored"],
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


EXPECTED_DISCOVER = {"toy_no_mask": "not_found", "toy_orphan_mask": "not_found"}
EXPECTED_PREPROCESS = {"toy_shape": "bad_labels", "toy_unmapped": "bad_labels", "toy_empty": "empty_labels"}


def test_bad_cases_are_coded_errors_and_the_others_are_processed(tmp_path: Path) -> None:
    card_path = make_toy(tmp_path)
    records, errors = discover(card_path)
    assert {e["study_id"]: e["code"] for e in errors} == EXPECTED_DISCOVER
    # A card built in code (root absolute) finds the same cases.
    in_code = DatasetCard.model_validate({**yaml.safe_load(card_path.read_text()), "root": str(tmp_path / "data")})
    assert [r.study_id for r in discover(in_code).records] == [r.study_id for r in records]
    assert all("skipped" in e["message"] and Path(e["path"]).is_file() for e in errors)
    by_id = {r.study_id: r for r in records}
    assert sorted(by_id) == sorted(["toy_good_a", "toy_good_b", *EXPECTED_PREPROCESS])
    for study_id, code in EXPECTED_PREPROCESS.items():
        with pytest.raises(StudyError) as caught:
            preprocess_study(by_id[study_id], CONFIG)
        assert caught.value.code.value == code, caught.value
        assert "case_" not in caught.value.message and str(tmp_path) not in caught.value.message
    with pytest.raises(StudyError, match=r"value\(s\) 9 that its dataset's labels do not map"):
        preprocess_study(by_id["toy_unmapped"], CONFIG)
    with pytest.raises(StudyError, match="no vertebral_body label"):
        preprocess_study(by_id["toy_empty"], CONFIG)

    good_a, good_b = (preprocess_study(by_id[s], CONFIG) for s in ("toy_good_a", "toy_good_b"))
    assert set(np.unique(good_a.sagittal_labels).tolist()) == {0, vertebra_label("L5"), disc_label_for_level("L5/S1")}
    assert good_a.label_groups == [["vertebral_body"], ["disc"]]
    assert good_b.label_groups == [["vertebral_body"]]  # the optional disc is absent: unknown for this case
    assert good_b.arrays()["label_partition"].tolist() == [0, Structure.VERTEBRAL_BODY.index, 0, 0, 0]
    assert not good_a.arrays()["labelled_span_only"]


def test_the_pipeline_lists_bad_cases_and_writes_the_good_ones(tmp_path: Path) -> None:
    card_path = make_toy(tmp_path / "toy")
    out = tmp_path / "out"
    # The serial engine runs the same per-study code as a Ray Data worker (tests/preprocessing/test_pipeline.py
    # checks the shards are byte-identical); `make demo` preprocesses the real cards with Ray Data.
    summary = run_preprocessing(card_path, out, CONFIG, engine="serial")
    ok, errors = read_jsonl(out / "preprocessed.jsonl"), read_jsonl(out / "errors.jsonl")
    assert [row["study_id"] for row in ok] == ["toy_good_a", "toy_good_b"]
    assert {row["study_id"]: row["code"] for row in errors} == {**EXPECTED_DISCOVER, **EXPECTED_PREPROCESS}
    assert all(row["message"] for row in errors)
    assert {row["study_id"]: row["stage"] for row in errors if row["study_id"] in EXPECTED_PREPROCESS} == {
        study_id: "preprocess" for study_id in EXPECTED_PREPROCESS}
    assert (summary.ok, summary.failed) == (2, 5)
    # Only the good cases have shards, and nothing half-written is left.
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["toy_good_a.npz", "toy_good_b.npz"]
    rows = {row["study_id"]: row for row in ok}
    assert rows["toy_good_a"]["label_groups"] == [["vertebral_body"], ["disc"]]
    assert rows["toy_good_b"]["label_groups"] == [["vertebral_body"]]
    case = load_case(out / rows["toy_good_b"]["path"])
    assert case["label_partition"].tolist() == [0, 1, 0, 0, 0] and case["labelled_span_only"].shape == ()
    assert rows["toy_good_a"]["record"]["series"][0]["label_map"] == {"1": 2, "2": 201}
