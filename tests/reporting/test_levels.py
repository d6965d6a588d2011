"""Level naming by counting from the sacrum (``lss.reporting.levels.name_levels``) on hand-built mid-sagittal masks.

Masks are (Y posterior -> anterior, Z inferior -> superior) structure indices (``lss.anatomy.Structure``) at
0.5 x 1.25 mm: discs 8 px (10 mm) high and 40 px (20 mm) deep, 22 px (27.5 mm) vertebral bodies between them, so
the discs are 30 px = 37.5 mm apart, and a sacrum below the lowest disc.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_prediction import DISC_Z, known_prediction

from lss.anatomy import LEVELS, Structure
from lss.reporting.levels import FOUND, NOT_FOUND, NOT_IN_FIELD_OF_VIEW, name_levels

SPACING = (0.5, 1.25)
DISC, BODY, CANAL = Structure.DISC.index, Structure.VERTEBRAL_BODY.index, Structure.CANAL.index
Y_DISC = (70, 110)
HALF = 4  # half a disc's height, px
GAP = 30  # disc centre to disc centre, px (37.5 mm)
BODY_PX = 22
FIRST_Z = 50  # the lowest disc's centre


def spine(n_discs: int = 5, top_room_px: int | None = None, sacrum: bool = True,
          drop: tuple[int, ...] = ()) -> tuple[np.ndarray, list[int]]:
    """A straight spine with ``n_discs`` discs; returns the mask and the disc centres (px, caudal to cranial).

    Args:
        top_room_px: Z pixels of image above the top disc's upper edge (default: the body above it, 22 px).
        sacrum: draw the sacrum (a 32 px body) below the lowest disc.
        drop: indices (0 = lowest) of discs left out (background, the bodies around them stay apart).
    """
    centres = [FIRST_Z + k * GAP for k in range(n_discs)]
    room = BODY_PX if top_room_px is None else top_room_px
    mask = np.zeros((128, centres[-1] + HALF + room), dtype=np.int16)
    mask[40:64, :] = CANAL
    if sacrum:
        mask[Y_DISC[0]:Y_DISC[1], FIRST_Z - HALF - 32:FIRST_Z - HALF] = BODY
    for k, z in enumerate(centres):
        if k not in drop:
            mask[Y_DISC[0]:Y_DISC[1], z - HALF:z + HALF] = DISC
        mask[Y_DISC[0]:Y_DISC[1], z + HALF:z + HALF + BODY_PX] = BODY
    return mask, centres


def centre_z(region: np.ndarray) -> float:
    return float(np.argwhere(region)[:, 1].mean())


def named_centres(naming) -> dict[str, float | None]:
    return {lv: None if d is None else centre_z(d) for lv, d in naming.discs.items()}


def chain_discs(naming) -> list[dict]:
    return [item for item in naming.chain if item["kind"] == "disc"]


def test_the_helper_spine_is_named_in_order():
    prediction = known_prediction()
    naming = name_levels(prediction.sagittal_mask, prediction.sagittal_spacing)
    assert naming.method == "counted_from_sacrum" and naming.sacrum_found
    assert naming.status == {level: FOUND for level in LEVELS}
    assert naming.reasons == []
    assert naming.spacing_mm == pytest.approx(37.5)
    # DISC_Z is cranial -> caudal like LEVELS: each level's disc is the one drawn for it.
    for level, z in zip(LEVELS, DISC_Z, strict=True):
        assert centre_z(naming.discs[level]) == pytest.approx(z - 0.5)
        assert naming.discs[level].sum() == 40 * 8
    # The chain runs sacrum, L5/S1, body, L4/L5, body, ... caudal to cranial.
    assert naming.chain[0]["level"] == "sacrum" and naming.chain[0]["kind"] == "body"
    assert [item["kind"] for item in naming.chain] == ["body"] + ["disc", "body"] * 5
    assert [item["level"] for item in chain_discs(naming)] == list(reversed(LEVELS))
    disc = chain_discs(naming)[0]
    assert disc["height_mm"] == pytest.approx(10.0) and disc["length_mm"] == pytest.approx(20.0)
    summary = naming.summary()
    assert summary["status"] == naming.status and summary["method"] == "counted_from_sacrum"


@pytest.mark.parametrize("how", ["fov_z", "cropped_array"])
def test_a_field_of_view_starting_at_l3_puts_the_upper_levels_out_of_view(how):
    # The image ends 17 px (21 mm) above the L3/L4 disc's upper edge (z 113): less than one disc spacing.
    mask = known_prediction().sagittal_mask
    if how == "fov_z":
        padded = mask.copy()
        padded[:, 131:] = 0  # padding outside the acquired image
        naming = name_levels(padded, SPACING, fov_z=(0, 130))
    else:
        naming = name_levels(mask[:, :131], SPACING)
    assert naming.method == "counted_from_sacrum"
    assert naming.status == {"L1/L2": NOT_IN_FIELD_OF_VIEW, "L2/L3": NOT_IN_FIELD_OF_VIEW,
                             "L3/L4": FOUND, "L4/L5": FOUND, "L5/S1": FOUND}
    assert naming.discs["L1/L2"] is None and naming.discs["L2/L3"] is None
    assert centre_z(naming.discs["L3/L4"]) == pytest.approx(DISC_Z[2] - 0.5)
    assert any("not in the field of view" in r and "L1/L2" in r and "L2/L3" in r for r in naming.reasons)


@pytest.mark.parametrize(("room_mm", "expected"), [
    (20.0, {"L2/L3": NOT_IN_FIELD_OF_VIEW, "L1/L2": NOT_IN_FIELD_OF_VIEW}),
    (50.0, {"L2/L3": NOT_FOUND, "L1/L2": NOT_IN_FIELD_OF_VIEW}),  # room for L2/L3's disc, none segmented there
    (100.0, {"L2/L3": NOT_FOUND, "L1/L2": NOT_FOUND}),
])
def test_levels_above_the_top_disc_are_out_of_view_only_where_the_image_ends(room_mm, expected):
    mask, _ = spine(3, top_room_px=int(room_mm / SPACING[1]))
    naming = name_levels(mask, SPACING)
    assert {lv: naming.status[lv] for lv in expected} == expected
    assert [naming.status[lv] for lv in ("L3/L4", "L4/L5", "L5/S1")] == [FOUND] * 3
    missing = [lv for lv in ("L1/L2", "L2/L3") if expected[lv] == NOT_FOUND]
    if missing:
        assert any(r.startswith("no disc was segmented") and all(lv in r for lv in missing) for r in naming.reasons)


def test_an_image_that_goes_on_without_discs_is_not_found_not_out_of_view():
    # The helper spine with the L1/L2 and L2/L3 discs painted as bone: the image continues, no disc is there.
    mask = known_prediction().sagittal_mask.copy()
    for z in DISC_Z[:2]:
        mask[mask[:, z] == DISC, z - HALF:z + HALF] = BODY
    naming = name_levels(mask, SPACING)
    assert naming.status["L1/L2"] == NOT_FOUND and naming.status["L2/L3"] == NOT_FOUND
    assert [naming.status[lv] for lv in ("L3/L4", "L4/L5", "L5/S1")] == [FOUND] * 3
    assert naming.reasons == ["no disc was segmented at L1/L2, L2/L3"]


@pytest.mark.parametrize("n_discs", [6, 7])
def test_thoracolumbar_discs_above_l1_l2_do_not_shift_the_names(n_discs):
    mask, centres = spine(n_discs)
    naming = name_levels(mask, SPACING)
    assert naming.status == {level: FOUND for level in LEVELS}
    # L5/S1 is the lowest disc, L1/L2 the fifth from the bottom, whatever is above.
    for k, level in enumerate(reversed(LEVELS)):
        assert centre_z(naming.discs[level]) == pytest.approx(centres[k] - 0.5)
    labels = [item["level"] for item in chain_discs(naming)]
    assert labels == list(reversed(LEVELS)) + ["above L1/L2"] * (n_discs - 5)


def test_without_a_body_below_the_lowest_disc_nothing_is_counted():
    mask, _ = spine(5, sacrum=False)
    naming = name_levels(mask, SPACING)
    assert naming.method == "none" and not naming.sacrum_found
    assert naming.status == {level: NOT_FOUND for level in LEVELS}
    assert all(d is None for d in naming.discs.values())
    assert naming.chain == []
    assert len(naming.reasons) == 1 and "sacrum" in naming.reasons[0]


def test_a_body_far_below_the_lowest_disc_is_not_the_sacrum():
    # A body 30 mm below the lowest disc (more than half a disc spacing) does not sit directly below it.
    mask, _ = spine(5, sacrum=False)
    mask = np.concatenate([np.zeros((128, 40), np.int16), mask], axis=1)
    mask[40:64, :] = CANAL
    mask[Y_DISC[0]:Y_DISC[1], 0:(40 + FIRST_Z - HALF) - 24] = BODY
    naming = name_levels(mask, SPACING)
    assert naming.method == "none" and "sacrum" in naming.reasons[0]


def test_no_disc_at_all_is_said():
    mask, _ = spine(5)
    mask[mask == DISC] = 0
    naming = name_levels(mask, SPACING)
    assert naming.method == "none" and naming.status == {level: NOT_FOUND for level in LEVELS}
    assert naming.reasons == ["no intervertebral disc was found on the mid-sagittal slice"]


@pytest.mark.parametrize("fill", [0, BODY])
def test_a_missed_disc_in_the_middle_is_skipped_in_the_count(fill):
    mask = known_prediction().sagittal_mask.copy()
    z = DISC_Z[2]  # L3/L4
    mask[Y_DISC[0]:Y_DISC[1], z - HALF:z + HALF] = fill
    naming = name_levels(mask, SPACING)
    assert naming.status["L3/L4"] == NOT_FOUND and naming.discs["L3/L4"] is None
    for level, z in zip(LEVELS, DISC_Z, strict=True):
        if level != "L3/L4":
            assert naming.status[level] == FOUND
            assert centre_z(naming.discs[level]) == pytest.approx(z - 0.5), level
    assert naming.spacing_mm == pytest.approx(37.5)
    assert naming.reasons == ["no disc was segmented at L3/L4"]


def test_two_missed_discs_in_a_row_are_skipped_too():
    mask, centres = spine(6, drop=(2, 3))  # L3/L4 and L2/L3 not segmented
    naming = name_levels(mask, SPACING)
    assert naming.status == {"L1/L2": FOUND, "L2/L3": NOT_FOUND, "L3/L4": NOT_FOUND, "L4/L5": FOUND,
                             "L5/S1": FOUND}
    assert centre_z(naming.discs["L1/L2"]) == pytest.approx(centres[4] - 0.5)


@pytest.mark.parametrize(("z", "size"), [
    (125, 3),   # 9 px = 5.6 mm2: below the minimum disc area, inside the L3 body
    (125, 6),   # 36 px = 22.5 mm2: above the minimum, but a small fraction of a disc, inside the L3 body
    (95, 6),    # inside the L4 body, halfway between two discs
    (183, 6),   # above the top disc
    (30, 6),    # inside the sacrum, below L5/S1: must not become the "lowest disc"
])
def test_a_small_disc_labelled_island_is_not_a_level(z, size):
    mask = known_prediction().sagittal_mask.copy()
    mask[85:85 + size, z:z + size] = DISC
    naming = name_levels(mask, SPACING)
    assert naming.status == {level: FOUND for level in LEVELS}
    assert len(chain_discs(naming)) == 5
    for level, dz in zip(LEVELS, DISC_Z, strict=True):
        assert centre_z(naming.discs[level]) == pytest.approx(dz - 0.5), level


@pytest.mark.parametrize("cut", ["along_z", "along_y"])
def test_a_disc_split_in_two_is_one_level(cut):
    mask = known_prediction().sagittal_mask.copy()
    z = DISC_Z[2]  # L3/L4: z 106..113, Y 70..109
    if cut == "along_z":  # a horizontal cleft: an upper and a lower half
        mask[Y_DISC[0]:Y_DISC[1], z - 1] = 0  # 3 px below, 4 px above: both halves over a third of a disc
    else:  # a vertical cleft: an anterior and a posterior half
        mask[89, z - HALF:z + HALF] = 0
    naming = name_levels(mask, SPACING)
    assert naming.status == {level: FOUND for level in LEVELS}
    assert len(chain_discs(naming)) == 5
    for level, dz in zip(LEVELS, DISC_Z, strict=True):
        assert abs(centre_z(naming.discs[level]) - (dz - 0.5)) <= 3, level


def test_bad_inputs_raise_clear_errors():
    mask = known_prediction().sagittal_mask
    with pytest.raises(ValueError, match="must be 2D"):
        name_levels(mask[None], SPACING)
    with pytest.raises(ValueError, match="must be 2D"):
        name_levels(mask[0], SPACING)
    for spacing in [(0.5,), (0.5, 1.25, 1.0), (0.5, 0.0), (0.5, -1.25), (float("nan"), 1.25), (0.5, float("inf"))]:
        with pytest.raises(ValueError, match="spacing_mm must be two positive numbers"):
            name_levels(mask, spacing)
    with pytest.raises(ValueError, match="L5/S1"):
        name_levels(mask, SPACING, levels=("L1/L2", "L2/L3", "L3/L4", "L4/L5"))


def test_naming_is_deterministic_and_does_not_modify_the_mask():
    mask = known_prediction().sagittal_mask
    before = mask.copy()
    first, second = name_levels(mask, SPACING), name_levels(mask, SPACING)
    assert np.array_equal(mask, before)
    assert first.summary() == second.summary()


def test_a_field_of_view_cut_through_l5_does_not_name_l4_l5_as_l5_s1():
    mask = known_prediction().sagittal_mask.copy()
    mask[:, :60] = 0  # the sacrum and the L5/S1 disc are below the acquired image; the L5 body is cut at z 60
    naming = name_levels(mask, SPACING, fov_z=(60, mask.shape[1] - 1))
    # The L4/L5 disc (z 80) must not be named L5/S1: the safe answers are "not counted" or L5/S1 not found.
    named = naming.discs["L5/S1"]
    assert named is None or abs(centre_z(named) - (DISC_Z[4] - 0.5)) < 3
