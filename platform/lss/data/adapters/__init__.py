"""Dataset adapters: turn a dataset folder, in its own layout, into manifest records (``StudyRecord``).

Every adapter module exposes ``discover(root) -> AdapterResult`` (records with absolute paths, plus error entries
``{"study_id", "code", "message", "path"}``; see ``lss.data.adapters.base``). ``build_manifest`` picks the adapter:

==========  =====================================================================  ===============
kind        recognised by                                                          module
==========  =====================================================================  ===============
card        ``root`` is a dataset card, a ``.yaml`` / ``.yml`` file (data/cards/)    ``card``
native      ``root/manifest.jsonl`` (or ``root`` is that file)                      ``native``
spider      ``root/images/*.mha`` with ``root/masks/`` or radiological_gradings.csv  ``spider``
rsna2024    ``root/{train,test}_series_descriptions.csv`` or ``{train,test}_images/``  ``rsna``
generic     anything else: DICOM folders, NIfTI / MetaImage files                   ``generic``
==========  =====================================================================  ===============
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lss.config import InputLimits
from lss.data.adapters import card, generic, native, rsna, spider
from lss.data.adapters.base import AdapterError, AdapterResult, check_root, error_entry
from lss.data.manifest import MANIFEST_NAME

__all__ = ["ADAPTERS", "KINDS", "AdapterResult", "AdapterError", "error_entry", "detect_kind", "build_manifest"]

ADAPTERS: dict[str, Callable[[str | Path], AdapterResult]] = {
    "card": card.discover,
    "native": native.discover,
    "spider": spider.discover,
    "rsna2024": rsna.discover,
    "generic": generic.discover,
}
KINDS: tuple[str, ...] = tuple(ADAPTERS)
# The adapters that read image headers, and so take the reading budget (``lss.data.io.limits``).
_READ_HEADERS = frozenset({"generic", "rsna2024"})


def detect_kind(root: str | Path) -> str:
    """The layout of a dataset: "card", "native", "spider", "rsna2024" or "generic" (see the module table).

    Raises:
        StudyError: NOT_FOUND when ``root`` does not exist.
    """
    root = check_root(root)
    if root.is_file():
        if root.suffix.lower() in card.CARD_SUFFIXES:
            return "card"
        return "native" if root.name == MANIFEST_NAME else "generic"
    if (root / MANIFEST_NAME).is_file():
        return "native"
    images = root / "images"
    if (
        images.is_dir()
        and any(images.glob("*.mha"))
        and ((root / "masks").is_dir() or (root / spider.GRADINGS_FILE).is_file())
    ):
        return "spider"
    for split in rsna.SPLITS:
        if (root / f"{split}_series_descriptions.csv").is_file() or (root / f"{split}_images").is_dir():
            return "rsna2024"
    return "generic"


def build_manifest(root: str | Path, kind: str = "auto", *, limits: InputLimits | None = None) -> AdapterResult:
    """Builds the manifest records of a dataset with the adapter of its layout.

    Args:
        root: the dataset folder (or, for "generic", a single image file; for "native", the manifest file; for
            "card", the dataset card).
        kind: "auto" (``detect_kind``) or one of ``KINDS``.
        limits: the reading budget of the image headers an adapter reads ("generic", "rsna2024"); None for the
            defaults.

    Returns:
        The adapter's ``AdapterResult``.

    Raises:
        ValueError: for an unknown ``kind``.
        StudyError: NOT_FOUND when ``root`` does not exist, and the adapter's dataset-level errors.
    """
    if kind != "auto" and kind not in ADAPTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected 'auto' or one of {KINDS}.")
    chosen = detect_kind(root) if kind == "auto" else kind
    if chosen in _READ_HEADERS:
        return ADAPTERS[chosen](root, limits=limits)  # type: ignore[call-arg]
    return ADAPTERS[chosen](root)
