"""lss: explainable diagnosis of lumbar spinal stenosis from MRI, on Ray.

The sub-packages follow the workflow: ``data`` (synthetic studies, readers, adapters) -> ``preprocessing``
(MONAI transforms on Ray Data) -> model, losses, training, tuning, reporting, serving.
"""

__version__ = "0.1.0"
