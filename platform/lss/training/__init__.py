"""Training on Ray Train: data and split, the per-worker loop (losses, checkpoints with PID state, TensorBoard),
the ``TorchTrainer`` launch with fault tolerance, and the training of the learned report generator
(``reporter``). The metrics it validates with are ``lss.metrics``."""

from lss.training.augment import RealScanIntensityAugment, SpatialAugment, TrainingAugment
from lss.training.data import CaseDataset, MixtureSampler, load_split, mix_splits, split_studies
from lss.training.trainer import TrainingResult, make_trainer, run_training

__all__ = ["CaseDataset", "MixtureSampler", "TrainingAugment", "SpatialAugment", "RealScanIntensityAugment",
           "load_split", "mix_splits", "split_studies", "TrainingResult", "make_trainer", "run_training"]
