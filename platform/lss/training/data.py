"""Training data: the preprocessed cases as a cached torch ``Dataset``, a deterministic study split, augmentations.

Cases are small (about 1 MB each), so every worker reads its shard of the split from the shared output folder into
memory once (``CaseDataset(cache=True)``) and ``ray.train.torch.prepare_data_loader`` adds the distributed sampler.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lss.model.inputs import case_to_sample
from lss.preprocessing.pipeline import load_case, read_jsonl

__all__ = ["split_studies", "load_split", "CaseDataset", "IntensityAugment"]


def split_studies(study_ids: list[str], val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """A deterministic train / val / test split of study ids (by a seeded hash, stable when studies are added).

    Raises:
        ValueError: when the fractions leave no training study.
    """
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}.")
    ranked = sorted(study_ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(ranked)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n and val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} studies leave no training study with val {val_fraction} and test {test_fraction}.")
    return {
        "test": sorted(ranked[:n_test]),
        "val": sorted(ranked[n_test : n_test + n_val]),
        "train": sorted(ranked[n_test + n_val :]),
    }


def load_split(data_dir: str | Path, val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """The split of the labelled cases in a preprocessed folder (cases with sagittal labels)."""
    rows = read_jsonl(Path(data_dir) / "preprocessed.jsonl")
    labelled = [row["study_id"] for row in rows if row.get("has_sagittal_labels")]
    if not labelled:
        raise ValueError(f"{data_dir} has no labelled preprocessed cases (run `lss preprocess` on a labelled set).")
    return split_studies(labelled, val_fraction, test_fraction, seed)


class IntensityAugment:
    """MONAI intensity augmentations of the image channels of a sample (labels are untouched).

    Args:
        seed: seed of the random state (each worker passes its own).
    """

    def __init__(self, seed: int = 0) -> None:
        from monai.transforms import Compose, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

        self.transform = Compose([
            RandScaleIntensity(factors=0.15, prob=0.8),
            RandShiftIntensity(offsets=0.05, prob=0.5),
            RandAdjustContrast(gamma=(0.75, 1.33), prob=0.5),
            RandGaussianNoise(std=0.02, prob=0.5),
        ])
        self.transform.set_random_state(seed)

    def __call__(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sample = dict(sample)
        sample["sagittal"] = torch.as_tensor(self.transform(sample["sagittal"])).clamp_(0.0, 1.5)
        axial = sample["axial"]
        sample["axial"] = torch.stack([torch.as_tensor(self.transform(level)) for level in axial]).clamp_(0.0, 1.5)
        return sample


class CaseDataset(Dataset):
    """Preprocessed cases of a list of studies as model samples (``lss.model.inputs.case_to_sample``).

    Args:
        data_dir: a ``lss preprocess`` output folder.
        study_ids: the studies to serve (e.g. one split), in this order.
        sagittal_slices: 2.5D context of the sagittal input.
        augment: an ``IntensityAugment`` for training, or None.
        cache: keep samples in memory after the first read.
    """

    def __init__(self, data_dir: str | Path, study_ids: list[str], sagittal_slices: int = 3,
                 augment: IntensityAugment | None = None, cache: bool = True) -> None:
        self.data_dir = Path(data_dir)
        rows = {row["study_id"]: row for row in read_jsonl(self.data_dir / "preprocessed.jsonl")}
        missing = [s for s in study_ids if s not in rows]
        if missing:
            raise ValueError(f"{len(missing)} studies are not in {self.data_dir}/preprocessed.jsonl: {missing[:5]}.")
        self.paths = [self.data_dir / rows[s]["path"] for s in study_ids]
        self.study_ids = list(study_ids)
        self.sagittal_slices = sagittal_slices
        self.augment = augment
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self._cache.get(index) if self._cache is not None else None
        if sample is None:
            sample = case_to_sample(load_case(self.paths[index]), self.sagittal_slices)
            if self._cache is not None:
                self._cache[index] = sample
        return self.augment(sample) if self.augment is not None else sample


def write_split(split: dict[str, list[str]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=1))
    return path
