"""Training on Ray Train: data and split, the per-worker loop (losses, checkpoints with PID state, TensorBoard),
the ``TorchTrainer`` launch with fault tolerance, and the metrics every stage shares."""

from lss.training.data import CaseDataset, IntensityAugment, load_split, split_studies
from lss.training.trainer import TrainingResult, make_trainer, run_training

__all__ = ["CaseDataset", "IntensityAugment", "load_split", "split_studies", "TrainingResult", "make_trainer",
           "run_training"]
