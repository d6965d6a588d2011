"""From tissue labels to a T2-weighted MR image, SynthSeg-style: random contrast, bias field, blur, Rician noise.

Per-tissue mean intensities are drawn around realistic T2 fast spin-echo contrast (CSF and a healthy nucleus bright,
a degenerated disc dark, marrow intermediate, fat bright, muscle and ligament dark), so that a model trained on these
images cannot rely on one intensity profile. Partial volume comes from averaging several samples across each slice's
thickness (see ``lss.data.synth.views``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from lss.anatomy import Tissue

__all__ = ["T2_MEANS", "Contrast", "sample_contrast", "tissue_intensity", "finish_image"]

# Typical T2 FSE signal per tissue on a 0-1 scale (mean, spread of the per-study draw).
T2_MEANS: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.BODY: (0.45, 0.08),  # retroperitoneal and abdominal tissue, fat-rich
    Tissue.SUBCUTANEOUS_FAT: (0.78, 0.08),
    Tissue.MUSCLE: (0.17, 0.04),
    Tissue.MARROW: (0.42, 0.08),
    Tissue.CORTICAL_BONE: (0.05, 0.02),
    Tissue.POSTERIOR_ELEMENTS: (0.34, 0.07),
    Tissue.ANNULUS: (0.2, 0.04),
    Tissue.NUCLEUS: (0.82, 0.07),
    Tissue.EPIDURAL_FAT: (0.72, 0.08),
    Tissue.LIGAMENTUM_FLAVUM: (0.14, 0.04),
    Tissue.CSF: (0.96, 0.04),
    Tissue.CAUDA_EQUINA: (0.3, 0.06),
}


@dataclass
class Contrast:
    """One study's acquisition: tissue means and the corruptions applied after sampling.

    Attributes:
        means: (n_tissues,) mean intensity per ``Tissue`` value (healthy nucleus; see ``nucleus_by_grade``).
        nucleus_by_grade: (6,) nucleus intensity by Pfirrmann grade (index 1..5; darker with degeneration).
        texture: relative within-tissue variation.
        gamma: global contrast exponent.
        bias_coefficients: (10,) quadratic bias-field coefficients over world coordinates in metres.
        blur_sigma_px: in-plane Gaussian blur, pixels.
        noise_sigma: Rician noise level relative to the brightest tissue.
        scale: stored intensity of 1.0 (DICOM stores integers).
    """

    means: np.ndarray
    nucleus_by_grade: np.ndarray
    texture: float
    gamma: float
    bias_coefficients: np.ndarray
    blur_sigma_px: float
    noise_sigma: float
    scale: float


def sample_contrast(rng: np.random.Generator) -> Contrast:
    """Draws a random T2-like contrast for one study."""
    means = np.zeros(max(int(t) for t in Tissue) + 1, dtype=np.float32)
    for tissue, (mean, spread) in T2_MEANS.items():
        means[int(tissue)] = np.clip(rng.normal(mean, spread), 0.0, 1.2)
    healthy = means[int(Tissue.NUCLEUS)]
    annulus = means[int(Tissue.ANNULUS)]
    # Pfirrmann 1-2 bright, 3 intermediate, 4-5 dark (close to the annulus).
    fractions = np.array([1.0, 1.0, 0.92, 0.55, 0.22, 0.05])
    nucleus_by_grade = (annulus + (healthy - annulus) * fractions).astype(np.float32)
    return Contrast(
        means=means,
        nucleus_by_grade=nucleus_by_grade,
        texture=float(rng.uniform(0.02, 0.07)),
        gamma=float(rng.uniform(0.8, 1.25)),
        bias_coefficients=rng.normal(0.0, 0.6, 10).astype(np.float32),
        blur_sigma_px=float(rng.uniform(0.3, 0.9)),
        noise_sigma=float(rng.uniform(0.015, 0.045)),
        scale=float(rng.uniform(900.0, 2500.0)),
    )


def tissue_intensity(
    tissue: np.ndarray,
    nucleus_grade: np.ndarray,
    contrast: Contrast,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free intensity of sampled points.

    Args:
        tissue: (...) ``Tissue`` values.
        nucleus_grade: (...) Pfirrmann grade of the disc a nucleus point belongs to (ignored elsewhere).
        contrast: the study's contrast.
        rng: for the within-tissue texture.

    Returns:
        (...) float32 intensities on the 0-1 scale.
    """
    values = contrast.means[tissue.astype(np.intp)]
    nucleus = tissue == Tissue.NUCLEUS
    values = np.where(nucleus, contrast.nucleus_by_grade[np.clip(nucleus_grade, 1, 5)], values)
    texture = rng.normal(1.0, contrast.texture, size=values.shape).astype(np.float32)
    return (values * texture).astype(np.float32)


def _bias_field(points: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    x, y, z = (points[..., i] / 1000.0 for i in range(3))
    terms = [np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    log_field = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    return np.exp(np.clip(log_field, -1.0, 1.0) * 0.6 - 0.6 * coefficients[0])


def finish_image(
    clean: np.ndarray, centres: np.ndarray, contrast: Contrast, rng: np.random.Generator
) -> np.ndarray:
    """Applies gamma, bias field, in-plane blur and Rician noise; returns non-negative float32.

    Args:
        clean: (I, J, K) noise-free intensities, slices along K.
        centres: (I, J, K, 3) world coordinates of the voxel centres (for the bias field).
        contrast: the study's contrast.
        rng: for the noise.
    """
    image = np.clip(clean, 0.0, None) ** contrast.gamma
    image = image * _bias_field(centres, contrast.bias_coefficients)
    image = gaussian_filter(image, sigma=(contrast.blur_sigma_px, contrast.blur_sigma_px, 0.0))
    sigma = contrast.noise_sigma
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    image = np.sqrt(real**2 + imag**2)
    return (image * contrast.scale).astype(np.float32)
