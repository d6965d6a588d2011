"""Training data: the preprocessed cases as a cached torch ``Dataset``, a deterministic study split, the splits of
the ``train.mix`` datasets and the sampler that draws from them by weight (augmentations: ``lss.training.augment``).

Cases are small (about 1 MB each), so every worker reads its shard of the split from the shared output folder into
memory once (``CaseDataset(cache=True)``) and ``ray.train.torch.prepare_data_loader`` adds the distributed sampler.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lss.data.cases import INDEX_NAME, load_case, read_jsonl
from lss.model.inputs import case_to_sample

__all__ = ["split_studies", "load_split", "labelled_studies", "mix_splits", "CaseDataset", "MixtureSampler",
           "forward_studies"]


def split_studies(study_ids: list[str], val_fraction: float, test_fraction: float,
                  seed: int = 0) -> dict[str, list[str]]:
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
    labelled = labelled_studies(data_dir)
    if not labelled:
        raise ValueError(f"{data_dir} has no labelled preprocessed cases (run `lss preprocess` on a labelled set).")
    return split_studies(labelled, val_fraction, test_fraction, seed)


def labelled_studies(data_dir: str | Path) -> list[str]:
    """Study ids of the cases with sagittal labels in a preprocessed folder."""
    rows = read_jsonl(Path(data_dir) / INDEX_NAME)
    return [row["study_id"] for row in rows if row.get("has_sagittal_labels")]


def mix_splits(sources, seed: int = 0) -> list[dict]:
    """The train / val / test studies of each ``train.mix`` source (``lss.config.MixSource``).

    ``holdout`` studies are its test set; the others are split into train and val by ``val_fraction`` (a seeded
    hash, as ``split_studies``).

    Returns:
        One ``{"name", "data_dir", "weight", "split": {"train", "val", "test"}}`` per source.

    Raises:
        ValueError: when a source has no labelled case left to train on, or two sources share a name.
    """
    out, names = [], set()
    for source in sources:
        data_dir = Path(source.path).resolve()
        name = source.name or data_dir.name
        if name in names:
            raise ValueError(f"two train.mix sources are named {name!r}; give them distinct names.")
        names.add(name)
        labelled = labelled_studies(data_dir)
        holdout = sorted(set(source.holdout) & set(labelled))
        rest = [s for s in labelled if s not in set(holdout)]
        if not rest:
            raise ValueError(f"train.mix source {name!r} ({data_dir}) has no labelled study left to train on.")
        split = split_studies(rest, source.val_fraction, 0.0, seed) if len(rest) > 1 else {"train": rest, "val": [],
                                                                                            "test": []}
        split["test"] = holdout
        out.append({"name": name, "data_dir": str(data_dir), "weight": float(source.weight), "split": split})
    return out


class MixtureSampler(torch.utils.data.Sampler):
    """Draws indices of a ``ConcatDataset`` so that each part is drawn with probability proportional to its weight.

    Each worker (rank) draws its own ``num_samples`` with replacement from a generator seeded by (seed, rank,
    epoch): the mixture holds on every worker, and a rerun with the same seed draws the same batches.

    Args:
        sizes: the number of samples of each part, in ``ConcatDataset`` order.
        weights: the sampling weight of each part (> 0).
        num_samples: draws per epoch (per worker).
        seed: base seed; rank: this worker's rank.

    Raises:
        ValueError: when sizes and weights differ in length, a part is empty, or a weight is not positive.
    """

    def __init__(self, sizes: list[int], weights: list[float], num_samples: int, seed: int = 0, rank: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"sizes {sizes} and weights {weights} must have the same (non-zero) length.")
        if any(n < 1 for n in sizes) or any(not w > 0 for w in weights):
            raise ValueError(f"every part needs samples and a positive weight, got sizes {sizes}, weights {weights}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        total = float(sum(weights))
        self.probabilities = torch.cat([torch.full((n,), w / total / n, dtype=torch.float64)
                                        for n, w in zip(sizes, weights, strict=True)])
        self.num_samples, self.seed, self.rank, self.epoch = int(num_samples), int(seed), int(rank), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 10_007 + self.epoch)
        return iter(torch.multinomial(self.probabilities, self.num_samples, replacement=True,
                                      generator=generator).tolist())


class CaseDataset(Dataset):
    """Preprocessed cases of a list of studies as model samples (``lss.model.inputs.case_to_sample``).

    Args:
        data_dir: a ``lss preprocess`` output folder.
        study_ids: the studies to serve (e.g. one split), in this order.
        sagittal_slices: 2.5D context of the sagittal input.
        augment: a ``lss.training.augment.TrainingAugment`` for training (any callable on a sample), or None.
        cache: keep samples in memory after the first read.
    """

    def __init__(self, data_dir: str | Path, study_ids: list[str], sagittal_slices: int = 3,
                 augment=None, cache: bool = True) -> None:
        self.data_dir = Path(data_dir)
        rows = {row["study_id"]: row for row in read_jsonl(self.data_dir / INDEX_NAME)}
        missing = [s for s in study_ids if s not in rows]
        if missing:
            raise ValueError(f"{len(missing)} studies are not in {self.data_dir}/preprocessed.jsonl: {missing[:5]}.")
        self.paths = [self.data_dir / rows[s]["path"] for s in study_ids]
        self.study_ids = list(study_ids)
        # Per study, the level grades of the index (-1 where unknown), to weigh the severity classes by.
        self.severities = [list(rows[s].get("severity") or []) for s in study_ids]
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


def forward_studies(model, data_dir: str | Path, study_ids: list[str], batch_size: int = 4):
    """Runs a model (no gradients, both views) over the given studies of a preprocessed folder, for the fits made
    after training (canal offset, measured grade).

    Yields:
        ``(cases, batch, out)`` per batch: the loaded cases, their collated samples and the ``ModelOutput``.
        Unknown study ids are skipped.
    """
    from lss.model.inputs import collate_samples

    rows = {r["study_id"]: r for r in read_jsonl(Path(data_dir) / INDEX_NAME)}
    chosen = [rows[s] for s in study_ids if s in rows]
    for start in range(0, len(chosen), int(batch_size)):
        cases = [load_case(Path(data_dir) / r["path"]) for r in chosen[start:start + int(batch_size)]]
        batch = collate_samples([case_to_sample(c, model.config.sagittal_slices) for c in cases])
        with torch.no_grad():
            out = model(batch["sagittal"], batch["axial"], batch["axial_present"])
        yield cases, batch, out
