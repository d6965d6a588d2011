"""Who made the DICOM outputs, and their UIDs: the algorithm, the device, the series, the instances.

Every output of one diagnosis gets its UIDs from one ``OutputIdentity``. With a ``seed`` (the Serve API uses the
request id) the UIDs are derived from it, so rendering the outputs again gives the same UIDs and a Structured Report
always references the Segmentation instances written beside it; without one they are random. The seed must be
unique per diagnosis and carry no patient data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import lss

__all__ = ["OutputIdentity", "ALGORITHM_NAME", "MANUFACTURER", "SEG_SERIES_NUMBER", "SR_SERIES_NUMBER"]

ALGORITHM_NAME = "lss"
MANUFACTURER = "lss-platform"
MODEL_NAME = "LSS explainable stenosis grading"
SEG_SERIES_NUMBER = 9001  # high numbers keep derived series after the acquired ones in a viewer's series list
SR_SERIES_NUMBER = 9002


@dataclass(frozen=True)
class OutputIdentity:
    """The UIDs and algorithm identification shared by the outputs of one diagnosis.

    Args:
        seed: makes every UID a function of ``(seed, name)``; None draws a random seed (new UIDs each time).
        model_version: the model that made the prediction (e.g. the first 12 hex digits of its SHA-256); recorded
            as an algorithm parameter.
        software_version: the ``lss`` version (default: ``lss.__version__``).
    """

    seed: str | None = None
    model_version: str | None = None
    software_version: str = lss.__version__
    _seed: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "_seed", self.seed if self.seed is not None else secrets.token_hex(16))

    def uid(self, name: str) -> str:
        """The UID of one named thing of this diagnosis (e.g. "seg_series", "seg_sagittal", "sr")."""
        return str(generate_uid(entropy_srcs=["lss-export", self._seed, name]))

    @property
    def seg_series_uid(self) -> str:
        return self.uid("seg_series")

    @property
    def sr_series_uid(self) -> str:
        return self.uid("sr_series")

    @property
    def device_uid(self) -> str:
        """The UID of the software as an observing device (the same for every diagnosis of one version)."""
        return str(generate_uid(entropy_srcs=["lss-device", self.software_version]))

    @property
    def parameters(self) -> dict[str, str]:
        return {} if self.model_version is None else {"model_version": str(self.model_version)}

    def seg_algorithm(self) -> hd.AlgorithmIdentificationSequence:
        """The algorithm identification of each segment (family: Artificial Intelligence)."""
        return hd.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME, family=codes.DCM.ArtificialIntelligence, version=self.software_version,
            source=MANUFACTURER, parameters=self.parameters or None)

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        """The algorithm identification of each measurement group (TID 4019)."""
        params = [f"{k}={v}" for k, v in self.parameters.items()]
        return hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=self.software_version,
                                             parameters=params or None, family=codes.DCM.ArtificialIntelligence,
                                             manufacturer=MANUFACTURER)

    @property
    def software_versions(self) -> str:
        """SoftwareVersions: the lss version, and the model's when known."""
        if self.model_version is None:
            return self.software_version
        return f"{self.software_version} model {self.model_version}"

    @property
    def serial_number(self) -> str:
        """DeviceSerialNumber of the software "device"."""
        return f"{ALGORITHM_NAME}-{self.software_version}"
