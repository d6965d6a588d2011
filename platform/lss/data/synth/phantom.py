"""An analytic lumbar spine phantom: anatomy first, then pathology, evaluated at any world point.

The spine follows a circular arc in the mid-sagittal plane (lumbar lordosis, concave posteriorly). A world point
maps to spine coordinates ``(u, v, w)``: ``u`` lateral (mm, +right), ``v`` antero-posterior distance from the
posterior wall of the vertebral bodies (mm, +anterior), ``w`` arc length along that wall (mm, +superior, 0 at the
top endplate of S1). Every structure is a cross-section in ``(u, v)`` whose parameters vary along ``w``:

* vertebral bodies (superellipses with a cortical shell and endplates) and posterior elements (pedicles, lamina,
  spinous process, articular processes);
* discs (annulus and nucleus) with a posterior bulge and height loss when degenerated;
* the bony canal holding epidural fat, the ligamentum flavum (thickened at stenotic levels) and the dural sac
  (CSF, cauda equina roots, the conus above L1/L2);
* paraspinal and psoas muscles, subcutaneous fat and the body outline.

Stenosis is made, not labelled: per level a compression ``c`` in [0, 1] sets the disc bulge and the ligamentum
flavum thickness; the dural sac area and AP diameter are then *measured* on the disc mid-plane and the severity is
the rule grade of those measurements (``lss.anatomy.grade_from_measurements``). ``c`` is searched so that the
severity drawn from the prior (the RSNA 2024 class balance by default) is the one the measurements give.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lss.anatomy import (
    CANAL_LABEL,
    DISC_LABEL_OFFSET,
    LEVELS,
    POSTERIOR_LABEL_OFFSET,
    RSNA_CLASS_BALANCE,
    SEVERITIES,
    VERTEBRAE,
    Severity,
    Tissue,
    grade_from_measurements,
)

__all__ = ["LevelPathology", "SpinePhantom", "sample_phantom", "DISCS"]

# Discs from caudal to cranial: disc j lies between VERTEBRAE[j] (below) and VERTEBRAE[j + 1] (above).
DISCS: tuple[str, ...] = tuple(f"{VERTEBRAE[j + 1]}/{VERTEBRAE[j]}" for j in range(len(VERTEBRAE) - 1))

_MEASURE_STEP_MM = 0.15
_LF_REACH_MM = 7.0  # how far above/below the disc's mid-plane the ligamentum flavum reaches, beyond the disc


@dataclass
class LevelPathology:
    """Pathology and measurements of one disc level.

    Attributes:
        level: "L4/L5", ...
        severity: the rule grade of ``area_mm2`` and ``ap_mm``.
        compression: c in [0, 1]: 0 no narrowing, 1 the most the phantom makes.
        bulge_mm: posterior disc bulge beyond the vertebral body at the disc mid-plane, midline.
        bulge_halfwidth_mm: lateral half-width of the bulge (broad-based bulge vs focal protrusion).
        lf_thickness_mm: ligamentum flavum thickness at the disc level.
        disc_height_mm: disc height at the posterior wall.
        pfirrmann: disc degeneration grade 1-5 (drives the nucleus signal).
        area_mm2: measured dural sac cross-sectional area at the disc mid-plane.
        ap_mm: measured dural sac AP diameter (midline) at the disc mid-plane.
        sac_centre_uv: a point of the dural sac near its centroid on the disc mid-plane, spine coordinates (u, v) in mm.
    """

    level: str
    severity: Severity
    compression: float
    bulge_mm: float
    bulge_halfwidth_mm: float
    lf_thickness_mm: float
    disc_height_mm: float
    pfirrmann: int
    area_mm2: float
    ap_mm: float
    sac_centre_uv: tuple[float, float] = (0.0, 0.0)

    @property
    def disc_bulging(self) -> bool:
        return self.bulge_mm >= 1.5

    @property
    def lf_thickening(self) -> bool:
        return self.lf_thickness_mm >= 4.0

    @property
    def disc_narrowing(self) -> bool:
        return self.pfirrmann >= 4

    def findings(self) -> dict[str, float | int | bool]:
        return {
            "bulge_mm": round(self.bulge_mm, 2),
            "disc_bulging": self.disc_bulging,
            "lf_thickness_mm": round(self.lf_thickness_mm, 2),
            "lf_thickening": self.lf_thickening,
            "disc_height_mm": round(self.disc_height_mm, 2),
            "disc_narrowing": self.disc_narrowing,
            "pfirrmann": int(self.pfirrmann),
            "dark_disc": self.pfirrmann >= 3,
            "compression": round(self.compression, 3),
        }


@dataclass
class SpinePhantom:
    """All parameters of one synthetic spine; evaluate it with ``labels_world`` or ``labels_local``.

    Per-disc arrays are indexed from caudal (0 = L5/S1) to cranial, like ``DISCS``; per-vertebra arrays like
    ``VERTEBRAE`` (0 = S1).
    """

    # Placement: the arc's centre (y, z) in world RAS, its radius, the angle of w = 0, lateral offset.
    center_yz: np.ndarray
    radius: float
    phi0: float
    x0: float
    mid_w: float  # w of the mid-lumbar point where the spine's tangent is (nearly) vertical
    # Along w: boundaries of the segments S1 | disc 0 | L5 | disc 1 | ... | T11 (first and last open).
    vertebra_height: np.ndarray
    disc_height: np.ndarray
    # Cross-section sizes, per disc (interpolated along w between disc mid-planes).
    body_width: np.ndarray
    body_depth: np.ndarray
    canal_halfwidth: np.ndarray
    canal_ap: np.ndarray
    sac_halfwidth: np.ndarray
    sac_half_ap: np.ndarray
    sac_anterior_gap: np.ndarray
    # Pathology per disc.
    bulge: np.ndarray
    bulge_halfwidth: np.ndarray
    lf_thickness: np.ndarray
    pfirrmann: np.ndarray
    # Soft tissue.
    body_halfwidth: float
    body_half_ap: float
    body_center_v: float
    fat_thickness: float
    muscle_halfwidth: float
    muscle_half_ap: float
    roots: np.ndarray  # (R, 2) root centres in sac-normalised (u/a, (v - vc)/b) coordinates
    levels: dict[str, LevelPathology] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------------- geometry
    @property
    def disc_bounds(self) -> np.ndarray:
        """(D, 2) w of each disc's lower and upper endplate."""
        lows, highs = [], []
        w = 0.0
        for j in range(len(self.disc_height)):
            lows.append(w)
            w += self.disc_height[j]
            highs.append(w)
            w += self.vertebra_height[j + 1]
        return np.stack([lows, highs], axis=1)

    @property
    def disc_mid(self) -> np.ndarray:
        bounds = self.disc_bounds
        return bounds.mean(axis=1)

    def disc_index(self, level: str) -> int:
        return DISCS.index(level)

    def to_local(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World RAS points (..., 3) -> spine coordinates u, v, w (each (...))."""
        points = np.asarray(points, dtype=np.float64)
        dy = points[..., 1] - self.center_yz[0]
        dz = points[..., 2] - self.center_yz[1]
        r = np.hypot(dy, dz)
        phi = np.arctan2(dz, dy)
        u = (points[..., 0] - self.x0).astype(np.float32)
        v = (r - self.radius).astype(np.float32)
        w = (self.radius * (phi - self.phi0)).astype(np.float32)
        return u, v, w

    def frame_at(self, w: float, v: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """World origin and unit axes (lateral +right, anterior, superior tangent) at spine coordinates (0, v, w)."""
        phi = self.phi0 + w / self.radius
        radial = np.array([0.0, np.cos(phi), np.sin(phi)])
        tangent = np.array([0.0, -np.sin(phi), np.cos(phi)])
        origin = np.array([self.x0, *self.center_yz]) + (self.radius + v) * radial
        return origin, np.array([1.0, 0.0, 0.0]), radial, tangent

    # ------------------------------------------------------------------------------------------- evaluation
    def labels_world(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue classes and native on-disk labels (``lss.anatomy``) at world RAS points (..., 3)."""
        u, v, w = self.to_local(points)
        return self.labels_local(u, v, w)

    def labels_local(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue classes (``Tissue``, uint8) and native labels (int16) at spine coordinates (any equal shapes).

        The labels follow ``lss.anatomy``: vertebral body ``k`` (1-25), its posterior elements ``300 + k``, disc
        ``200 + k``, the canal (dural sac and roots) 100.
        """
        shape = u.shape
        u, v, w = u.ravel(), v.ravel(), w.ravel()
        tissue = np.zeros(u.shape, dtype=np.uint8)
        label = np.zeros(u.shape, dtype=np.int16)
        mids = self.disc_mid
        p = self._interp(w, mids)

        # Body outline and subcutaneous fat in a straight frame (the back is flatter than the spine is curved);
        # muscles follow the spine.
        v_flat = (self.radius + v) * np.cos((w - self.mid_w) / self.radius) - self.radius
        body = ((u / self.body_halfwidth) ** 2 + ((v_flat - self.body_center_v) / self.body_half_ap) ** 2) <= 1.0
        tissue[body] = Tissue.BODY
        inner = ((u / (self.body_halfwidth - self.fat_thickness)) ** 2
                 + ((v_flat - self.body_center_v) / (self.body_half_ap - self.fat_thickness)) ** 2) <= 1.0
        tissue[body & ~inner] = Tissue.SUBCUTANEOUS_FAT
        muscle_v = -(p["canal_ap"] + 0.55 * self.muscle_half_ap + 6.0)
        muscle_u = p["canal_halfwidth"] + 0.9 * self.muscle_halfwidth
        erector = (((np.abs(u) - muscle_u) / self.muscle_halfwidth) ** 2
                   + ((v - muscle_v) / self.muscle_half_ap) ** 2 <= 1)
        psoas_r = 7.0 + 0.08 * np.clip(mids[-2] - w, 0, None)  # psoas grows caudally
        psoas = ((np.abs(u) - (p["body_width"] / 2 + psoas_r)) ** 2 + (v - p["body_depth"] * 0.55) ** 2) <= psoas_r**2
        psoas &= w > -10
        tissue[inner & (erector | psoas)] = Tissue.MUSCLE

        # Segment of each point along w.
        seg = self._segment(w)  # even: vertebra seg // 2 ; odd: disc seg // 2
        is_disc_seg = (seg % 2) == 1
        vert_idx = np.clip(seg // 2, 0, len(VERTEBRAE) - 1)
        disc_idx = np.clip(seg // 2, 0, len(DISCS) - 1)
        nearest = self._nearest_disc(w, mids)
        w_rel = w - mids[nearest]

        # Canal contents.
        canal, lf, sac, roots = self._canal(u, v, w, w_rel, nearest, p)
        disc = is_disc_seg & self._disc_shape(u, v, w - mids[disc_idx], disc_idx, p)
        tissue[canal] = Tissue.EPIDURAL_FAT
        tissue[sac] = Tissue.CSF
        tissue[roots] = Tissue.CAUDA_EQUINA
        tissue[lf] = Tissue.LIGAMENTUM_FLAVUM
        label[sac | roots] = CANAL_LABEL

        # Discs: annulus with a nucleus inside.
        nucleus = disc & self._nucleus(u, v, w - mids[disc_idx], disc_idx, p)
        tissue[disc] = Tissue.ANNULUS
        tissue[nucleus] = Tissue.NUCLEUS
        label[disc] = (DISC_LABEL_OFFSET + disc_idx[disc] + 1).astype(np.int16)

        # Vertebral bodies with cortex and endplates; posterior elements outside the canal.
        vb, cortex = self._vertebral_body(u, v, w, seg, p)
        posterior = self._posterior_elements(u, v, w, p, mids) & ~canal & ~vb & ~disc
        tissue[vb] = Tissue.MARROW
        tissue[vb & cortex] = Tissue.CORTICAL_BONE
        tissue[posterior] = Tissue.POSTERIOR_ELEMENTS
        # Bodies take the vertebra's label (1-25), posterior elements 300 + that number; posterior elements between
        # two bodies belong to the vertebra whose body is nearest along w.
        label[vb] = (vert_idx[vb] + 1).astype(np.int16)
        number = vert_idx + 1
        if np.any(posterior & is_disc_seg):
            pd = posterior & is_disc_seg
            upper = (w[pd] - mids[disc_idx[pd]]) > 0
            number[pd] = disc_idx[pd] + 1 + upper
        label[posterior] = (POSTERIOR_LABEL_OFFSET + number[posterior]).astype(np.int16)
        return tissue.reshape(shape), label.reshape(shape)

    # --------------------------------------------------------------------------------------------- helpers
    def _interp(self, w: np.ndarray, mids: np.ndarray) -> dict[str, np.ndarray]:
        names = ("body_width", "body_depth", "canal_halfwidth", "canal_ap", "sac_halfwidth", "sac_half_ap",
                 "sac_anterior_gap")
        return {n: np.interp(w, mids, getattr(self, n)).astype(np.float32) for n in names}

    def _segment(self, w: np.ndarray) -> np.ndarray:
        bounds = self.disc_bounds.ravel()  # [d0lo, d0hi, d1lo, d1hi, ...]
        return np.searchsorted(bounds, w, side="right")

    @staticmethod
    def _nearest_disc(w: np.ndarray, mids: np.ndarray) -> np.ndarray:
        edges = (mids[1:] + mids[:-1]) / 2
        return np.searchsorted(edges, w)

    def _disc_shape(self, u, v, w_rel, j, p) -> np.ndarray:
        a = p["body_width"] / 2 + 1.0
        b = p["body_depth"] / 2 + 0.5
        footprint = (np.abs(u) / a) ** 2.5 + (np.abs(v - b + 0.5) / b) ** 2.5 <= 1.0
        bulge = self._bulge_profile(u, w_rel, j)
        behind = (v < 0) & (v >= -bulge) & (np.abs(u) < a)
        return footprint | behind

    def _bulge_profile(self, u, w_rel, j) -> np.ndarray:
        """Posterior extent of the disc beyond the posterior wall at (u, w_rel), mm (>= 0)."""
        height = self.disc_height[j]
        along = np.clip(1.0 - 0.7 * (2.0 * w_rel / height) ** 2, 0.0, 1.0)
        across = np.clip(1.0 - (u / self.bulge_halfwidth[j]) ** 2, 0.0, 1.0)
        return self.bulge[j] * along * np.sqrt(across)

    def _nucleus(self, u, v, w_rel, j, p) -> np.ndarray:
        a = p["body_width"] * 0.28
        b = p["body_depth"] * 0.28
        c = self.disc_height[j] * 0.32
        return (u / a) ** 2 + ((v - p["body_depth"] * 0.48) / b) ** 2 + (w_rel / c) ** 2 <= 1.0

    def _canal(self, u, v, w, w_rel, j, p):
        """Bony canal, ligamentum flavum, dural sac (CSF) and roots; all boolean (N,)."""
        hw, ap = p["canal_halfwidth"], p["canal_ap"]
        canal = (u / hw) ** 2 + ((v + ap / 2) / (ap / 2)) ** 2 <= 1.0
        # Ligamentum flavum: a posterior crescent of the canal, thicker laterally, around each disc level.
        near = np.abs(w_rel) <= (self.disc_height[j] / 2 + _LF_REACH_MM)
        taper = np.clip(1.0 - (np.abs(w_rel) - self.disc_height[j] / 2) / _LF_REACH_MM, 0.0, 1.0)
        thickness = self.lf_thickness[j] * (0.6 + 0.4 * np.clip(u / hw, -1, 1) ** 2) * np.where(near, taper, 0.0)
        posterior_wall = -ap / 2 - (ap / 2) * np.sqrt(np.clip(1.0 - (u / hw) ** 2, 0.0, 1.0))
        lf = canal & (v < posterior_wall + thickness)
        # Dural sac: an ellipse behind the anterior epidural gap, carved by the bulging disc and the flavum.
        a, b = p["sac_halfwidth"], p["sac_half_ap"]
        vc = -(p["sac_anterior_gap"] + b)
        uu, vv = u / a, (v - vc) / b
        sac = canal & ~lf & (uu**2 + vv**2 <= 1.0)
        in_disc_range = np.abs(w_rel) <= self.disc_height[j] / 2
        sac &= ~(in_disc_range & (v >= -self._bulge_profile(u, w_rel, j)))
        # Roots settle posteriorly (supine); above L1/L2 the conus medullaris sits in the middle of the sac.
        crowd = np.where(np.abs(w_rel) <= self.disc_height[j] / 2 + _LF_REACH_MM, self._compression()[j], 0.0)
        radius = (0.55 + 0.5 * crowd)[:, None]
        idx = np.flatnonzero(sac)
        roots = np.zeros_like(sac)
        if idx.size:
            du = (uu[idx, None] - self.roots[None, :, 0]) * a[idx, None]
            dv = (vv[idx, None] - self.roots[None, :, 1]) * b[idx, None]
            roots[idx] = np.any(du**2 + dv**2 <= radius[idx] ** 2, axis=1)
            conus_top = self.disc_mid[LEVELS_INDEX[LEVELS[0]]] + 4.0  # the conus ends near the top graded disc
            cord = (w[idx] > conus_top) & (
                (uu[idx] / 0.45) ** 2 + (vv[idx] / 0.55) ** 2 <= np.clip((w[idx] - conus_top) / 12.0, 0, 1)
            )
            roots[idx[cord]] = True
        return canal, lf, sac & ~roots, roots

    def _compression(self) -> np.ndarray:
        out = np.zeros(len(DISCS), dtype=np.float32)
        for name, level in self.levels.items():
            out[DISCS.index(name)] = level.compression
        return out

    def _vertebral_body(self, u, v, w, seg, p):
        a = p["body_width"] / 2
        b = p["body_depth"] / 2
        inside = (np.abs(u) / a) ** 2.5 + (np.abs(v - b) / b) ** 2.5 <= 1.0
        vb = inside & ((seg % 2) == 0)
        shell = 1.3
        core = (np.abs(u) / np.maximum(a - shell, 1)) ** 2.5 + (np.abs(v - b) / np.maximum(b - shell, 1)) ** 2.5 <= 1.0
        bounds = self.disc_bounds.ravel()
        gap = np.minimum(np.abs(w - bounds[np.clip(seg - 1, 0, len(bounds) - 1)]),
                         np.abs(w - bounds[np.clip(seg, 0, len(bounds) - 1)]))
        cortex = ~core | (gap < 1.0)
        return vb, cortex

    def _posterior_elements(self, u, v, w, p, mids) -> np.ndarray:
        hw, ap = p["canal_halfwidth"], p["canal_ap"]
        # Position within the vertebra: pedicles and lamina sit on the upper part of each body, the spinous
        # process slopes caudally; the articular processes bridge each disc behind the canal.
        nearest = self._nearest_disc(w, mids)
        w_rel = w - mids[nearest]
        height = self.disc_height[nearest]
        outside_disc = np.abs(w_rel) > height / 2 + 3.0
        pedicle = outside_disc & (np.abs(np.abs(u) - (hw + 3.5)) < 3.5) & (v < 1.0) & (v > -ap * 0.75)
        lamina = outside_disc & (np.abs(u) < hw + 8.0) & (v <= -ap * 0.65) & (
            v > -ap - 6.0 - 4.0 * (1 - np.clip(np.abs(u) / (hw + 8.0), 0, 1))
        ) & ~((u / hw) ** 2 + ((v + ap / 2) / (ap / 2)) ** 2 <= 1.0)
        spinous = outside_disc & (np.abs(u) < 3.5) & (v <= -ap - 2.0) & (v > -ap - 38.0)
        facet = (np.abs(w_rel) < height / 2 + 6.0) & (
            ((np.abs(u) - (hw + 7.0)) / 6.0) ** 2 + ((v + ap * 0.8) / 7.0) ** 2 <= 1.0
        )
        return pedicle | lamina | spinous | facet


LEVELS_INDEX = {name: DISCS.index(name) for name in DISCS}


# --------------------------------------------------------------------------------------------------- sampling
def _measure(phantom: SpinePhantom, j: int, step: float = _MEASURE_STEP_MM) -> tuple[float, float]:
    area, ap, _ = _measure_sac(phantom, j, step)
    return area, ap


def _measure_sac(phantom: SpinePhantom, j: int,
                 step: float = _MEASURE_STEP_MM) -> tuple[float, float, tuple[float, float]]:
    """Dural sac area (mm2), midline AP diameter (mm) and centre (u, v) on disc j's mid-plane, from the label
    function itself.

    Only the canal is evaluated (the sac is defined inside the bony canal), on a ``step`` mm grid.
    """
    hw = float(phantom.canal_halfwidth[j]) + 1.0
    ap = float(phantom.canal_ap[j]) + 1.0
    us = np.arange(-hw, hw + step / 2, step, dtype=np.float32)
    vs = np.arange(-ap, 1.0, step, dtype=np.float32)
    uu, vv = np.meshgrid(us, vs, indexing="ij")
    u, v = uu.ravel(), vv.ravel()
    w = np.full_like(u, phantom.disc_mid[j])
    # Every point lies on the one mid-plane: interpolate once, then broadcast (the same values, ~20% of the cost).
    p = {name: np.full_like(u, value[0]) for name, value in phantom._interp(w[:1], phantom.disc_mid).items()}
    nearest = np.full(u.shape, j)
    _, _, sac, roots = phantom._canal(u, v, w, w - phantom.disc_mid[j], nearest, p)
    sac = (sac | roots).reshape(uu.shape)
    area = float(sac.sum()) * step * step
    ap_mm = float(sac[np.argmin(np.abs(us)), :].sum()) * step
    if sac.any():
        # The sac pixel nearest its centroid: a compressed sac is a crescent whose centroid can lie outside it.
        su, sv = uu[sac], vv[sac]
        nearest = int(np.argmin((su - su.mean()) ** 2 + (sv - sv.mean()) ** 2))
        centre = (float(su[nearest]), float(sv[nearest]))
    else:
        centre = (0.0, -float(phantom.sac_anterior_gap[j] + phantom.sac_half_ap[j]))
    return area, ap_mm, centre


def _apply_compression(phantom: SpinePhantom, j: int, c: float, base_lf: float, lf_gain: float,
                       bulge_max: float) -> None:
    phantom.bulge[j] = c * bulge_max
    phantom.lf_thickness[j] = base_lf + c * lf_gain


def _draw_severity(rng: np.random.Generator, level: str, balance: str) -> Severity:
    probs = np.array(RSNA_CLASS_BALANCE[level] if balance == "rsna2024" else (1 / 3, 1 / 3, 1 / 3))
    return SEVERITIES[int(rng.choice(len(SEVERITIES), p=probs / probs.sum()))]


def sample_phantom(
    rng: np.random.Generator,
    lordosis_deg: tuple[float, float] = (40.0, 60.0),
    class_balance: str = "rsna2024",
    severities: dict[str, Severity] | None = None,
) -> SpinePhantom:
    """Draws one spine: anatomy within adult ranges, then per-level pathology reaching the drawn severity.

    Args:
        rng: the random generator (all randomness comes from it).
        lordosis_deg: range of the L1-S1 lordosis angle.
        class_balance: "rsna2024" (per-level RSNA 2024 prior) or "uniform".
        severities: force the severity of some levels (e.g. for tests); others are drawn.

    Returns:
        The phantom, with ``levels`` holding the measurements and rule grade of each graded level.
    """
    n_discs = len(DISCS)
    n_vert = len(VERTEBRAE)
    scale = rng.uniform(0.93, 1.07)  # body size
    canal_scale = rng.uniform(0.9, 1.08)  # congenital canal size
    vertebra_height = rng.uniform(25.0, 30.0, n_vert) * scale
    disc_height = rng.uniform(8.0, 12.0, n_discs) * scale
    # Lower lumbar bodies are wider and deeper; widths per disc level (0 = L5/S1).
    taper = np.linspace(1.0, 0.86, n_discs)
    body_width = rng.uniform(45.0, 50.0) * taper * scale
    body_depth = rng.uniform(31.0, 35.0) * np.linspace(1.0, 0.92, n_discs) * scale
    canal_halfwidth = rng.uniform(10.5, 12.5, n_discs) * canal_scale
    sac_halfwidth = canal_halfwidth - rng.uniform(1.5, 2.5, n_discs)
    sac_half_ap = rng.uniform(6.3, 7.6, n_discs) * canal_scale
    sac_anterior_gap = rng.uniform(0.8, 1.8, n_discs)
    canal_ap = sac_anterior_gap + 2 * sac_half_ap + rng.uniform(2.0, 3.5, n_discs)

    lordosis = np.deg2rad(rng.uniform(*lordosis_deg))
    lumbar_length = float(disc_height[:5].sum() + vertebra_height[1:6].sum())  # S1 top -> L1 top
    radius = lumbar_length / lordosis
    pitch = np.deg2rad(rng.uniform(-8.0, 8.0))
    # Mid-lumbar point at the world origin region, tangent vertical (+ pitch); centre of curvature posterior.
    mid_w = lumbar_length / 2
    phi_mid = pitch
    center_yz = -radius * np.array([np.cos(phi_mid), np.sin(phi_mid)]) + rng.normal(0.0, 3.0, 2)
    phi0 = phi_mid - mid_w / radius

    roots = []
    while len(roots) < 16:
        candidate = rng.uniform([-0.75, -0.9], [0.75, 0.1])
        if candidate[0] ** 2 + candidate[1] ** 2 < 0.72 and all(np.hypot(*(candidate - r)) > 0.22 for r in roots):
            roots.append(candidate)

    body_half_ap = rng.uniform(105.0, 135.0)
    phantom = SpinePhantom(
        center_yz=center_yz,
        radius=float(radius),
        phi0=float(phi0),
        x0=float(rng.normal(0.0, 2.0)),
        mid_w=float(mid_w),
        vertebra_height=vertebra_height,
        disc_height=disc_height,
        body_width=body_width,
        body_depth=body_depth,
        canal_halfwidth=canal_halfwidth,
        canal_ap=canal_ap,
        sac_halfwidth=sac_halfwidth,
        sac_half_ap=sac_half_ap,
        sac_anterior_gap=sac_anterior_gap,
        bulge=np.zeros(n_discs),
        bulge_halfwidth=rng.uniform(7.0, 14.0, n_discs),
        lf_thickness=rng.uniform(2.0, 3.5, n_discs),
        pfirrmann=np.ones(n_discs, dtype=int),
        body_halfwidth=rng.uniform(150.0, 185.0),
        body_half_ap=body_half_ap,
        body_center_v=float(body_half_ap - rng.uniform(75.0, 100.0)),
        fat_thickness=rng.uniform(8.0, 30.0),
        muscle_halfwidth=rng.uniform(17.0, 23.0),
        muscle_half_ap=rng.uniform(18.0, 24.0),
        roots=np.array(roots, dtype=np.float32),
    )

    forced = {k: Severity.parse(v) for k, v in (severities or {}).items()}
    grid = np.linspace(0.0, 1.0, 13)
    for level in LEVELS:
        j = DISCS.index(level)
        target = forced.get(level) or _draw_severity(rng, level, class_balance)
        base_lf = float(phantom.lf_thickness[j])
        lf_gain = rng.uniform(3.0, 5.5)
        bulge_max = float(0.9 * (phantom.sac_anterior_gap[j] + 2 * phantom.sac_half_ap[j]))
        grades = []
        for c in grid:
            _apply_compression(phantom, j, c, base_lf, lf_gain, bulge_max)
            area, ap = _measure(phantom, j, step=0.4)
            grades.append(grade_from_measurements(area, ap).index)
        grades = np.array(grades)
        hits = np.flatnonzero(grades == target.index)
        if hits.size == 0:
            # Unreachable for this canal (e.g. a wide canal never gets Severe): take the closest grade.
            hits = np.flatnonzero(np.abs(grades - target.index) == np.abs(grades - target.index).min())
        # Draw c inside the interval of grid points with the target grade, then measure at that exact c.
        lo, hi = grid[hits.min()], grid[hits.max()]
        c = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        _apply_compression(phantom, j, c, base_lf, lf_gain, bulge_max)
        area, ap = _measure(phantom, j)
        if grade_from_measurements(area, ap) is not target:
            # The interval's inside can differ from its grid points near a cut-off: fall back to a grid point.
            c = float(grid[hits[len(hits) // 2]])
            _apply_compression(phantom, j, c, base_lf, lf_gain, bulge_max)
        # Degeneration goes with compression: darker, lower discs where the canal is narrowed.
        pfirrmann = int(np.clip(np.round(1 + 3.2 * c + rng.normal(0.3, 0.8)), 1, 5))
        phantom.pfirrmann[j] = pfirrmann
        height_loss = 1.0 - 0.09 * max(pfirrmann - 2, 0) * rng.uniform(0.6, 1.0)
        phantom.disc_height[j] *= height_loss
        phantom.levels[level] = LevelPathology(
            level=level,
            severity=target,  # replaced by the measured grade below
            compression=c,
            bulge_mm=float(phantom.bulge[j]),
            bulge_halfwidth_mm=float(phantom.bulge_halfwidth[j]),
            lf_thickness_mm=float(phantom.lf_thickness[j]),
            disc_height_mm=float(phantom.disc_height[j]),
            pfirrmann=pfirrmann,
            area_mm2=float("nan"),
            ap_mm=float("nan"),
        )
    # Measure once the whole spine is final (disc heights move the mid-planes): the recorded area, AP diameter
    # and severity are those of the label map that gets rendered.
    for level in LEVELS:
        j = DISCS.index(level)
        area, ap, centre = _measure_sac(phantom, j)
        pathology = phantom.levels[level]
        pathology.area_mm2, pathology.ap_mm, pathology.sac_centre_uv = area, ap, centre
        pathology.severity = grade_from_measurements(area, ap)
    # Ungraded discs above L1 keep mild, random degeneration.
    for j in range(n_discs):
        if DISCS[j] not in LEVELS:
            phantom.pfirrmann[j] = int(rng.integers(1, 4))
    return phantom
