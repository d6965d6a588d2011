"""Evaluation of a saved model on preprocessed studies (the held-out split): metrics, tables and figures.

    model file (lss.model.save_model) + DATA/preprocessed.jsonl (+ a split: the study ids to use)
        -> batches of cases (lss.model.case_to_sample / collate_samples), model in eval mode, no gradients
        -> sagittal segmentation (mid-sagittal slice), axial segmentation (levels with axial labels),
           severity over the levels of known grade (calibrated probabilities of the model's
           ``lss.model.calibration``), graded twice: as given and sagittal-only (no axial input), each with
           accuracy, ECE and, at the model's abstention threshold, coverage and selective accuracy;
           the RSNA 2024 score, calibration, a per-level table
        -> OUT/results.json, OUT/results.md, OUT/confusion_matrix.png, OUT/dice.png, OUT/calibration.png

Every number comes from ``lss.metrics``, so evaluation, training validation and tuning agree. Studies
without labels are evaluated as far as their labels go: a metric with nothing to measure is skipped and the
reason is written in the report's notes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lss.anatomy import LEVELS, SEVERITIES, Severity, Structure, grade_from_measurements
from lss.data.cases import INDEX_NAME, file_sha256, load_case, read_jsonl, select_indexed_studies
from lss.evaluation.bootstrap import DEFAULT_RESAMPLES, bootstrap_interval, confusion_statistics, study_confusions
from lss.inference.predict import column_spacing
from lss.jsonable import to_jsonable
from lss.metrics import (
    SEVERITY_NAMES,
    SegmentationMeter,
    calibration_bins,
    rsna_score,
    selective_metrics,
    severity_metrics,
)
from lss.reporting.measurements import dural_sac_mm

__all__ = ["RESULTS_JSON", "RESULTS_MD", "PLOTS", "read_split", "evaluate_model", "format_summary"]

logger = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOTS = {"confusion_matrix": "confusion_matrix.png", "dice": "dice.png", "calibration": "calibration.png"}
CALIBRATION_BINS = 10
# The two ways every study is graded: with the axial input it has, and from the sagittal view alone.
PATHS = ("as_given", "sagittal_only")
COVERAGE_NOTE = ("coverage: the share of graded levels whose calibrated confidence (largest probability) reaches the "
                 "model's abstention threshold, so that a grade is stated; the others are withheld (abstained). "
                 "selective accuracy: the accuracy over the stated levels only. accuracy, balanced accuracy and the "
                 "confusion matrix count every level, stated or not.")


def read_split(path: str | Path, key: str | None = None) -> list[str]:
    """The study ids of a split file.

    Accepted: a JSON list of ids; a JSON object of named lists (``{"train": [...], "test": [...]}``), from which
    ``key`` picks one; or plain text with one id per line (blank lines and ``#`` comments skipped).

    Args:
        path: the split file.
        key: the list to take from a JSON object (required then, unless it holds a single list).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for a JSON object without ``key``, or a JSON value that is no list of ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist.")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, (list, dict)):  # plain text (a lone numeric id also parses as JSON)
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [i for i in ids if i]
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if key is None and len(lists) == 1:
            key = next(iter(lists))
        if key is None or key not in lists:
            raise ValueError(f"{path}: a JSON object of splits needs a key; choose one of {sorted(lists)}"
                             + (f" (got {key!r})." if key is not None else "."))
        data = lists[key]
    elif key is not None:
        raise ValueError(f"{path}: key {key!r} given, but the file holds a list, not an object of splits.")
    if not isinstance(data, list) or not all(isinstance(i, (str, int)) for i in data):
        raise ValueError(f"{path}: expected a JSON list of study ids.")
    return [str(i) for i in data]


def evaluate_model(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    study_ids: list[str] | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    reports: bool = True,
    generator_path: str | Path | None = None,
    report_style: str = "structured",
) -> dict[str, Any]:
    """Evaluates a saved model on preprocessed studies and writes the report.

    Args:
        model_path: a model file of ``lss.model.save_model``.
        data_dir: a preprocessing output folder (``preprocessed.jsonl`` and ``cases/``).
        out_dir: where ``results.json``, ``results.md`` and the PNG figures go (created).
        study_ids: the studies to evaluate (the held-out split); None = every case of ``data_dir``. Ids not in
            ``data_dir`` are skipped with a warning and listed in the results.
        batch_size: studies per forward pass.
        device: where the model runs.
        reports: also write and score each study's report (``lss.evaluation.reports``), when the studies carry
            reference reports.
        generator_path: a learned report generator to score beside the grounded writer.
        report_style: the style asked of the learned generator.

    Returns:
        The results (also in ``results.json``, where NaN is written as null): ``model`` (with its ``calibration``),
        ``data``, ``studies``, ``segmentation`` (``sagittal`` / ``axial`` metrics or None), ``severity`` (metrics
        of the calibrated probabilities as given, RSNA score, calibration, and at the model's
        ``abstain_threshold``: ``coverage``, ``selective_accuracy``, ``selective_balanced_accuracy``, ``n_stated``;
        ``ece_uncalibrated``; ``paths``: the same per path ``as_given`` / ``sagittal_only``; or None),
        ``per_level`` (with ``coverage``, ``selective_accuracy`` and ``sagittal_only_accuracy``), ``per_study``
        (with ``abstained`` per level), ``notes`` (what was skipped and why) and ``files``.

    Raises:
        FileNotFoundError: when the model file or ``data_dir/preprocessed.jsonl`` does not exist.
        ValueError: for an empty split, a split with no study in ``data_dir``, an index without cases,
            ``batch_size`` < 1, or cases whose axial input does not match the model.
    """
    from lss.model import case_to_sample, collate_samples, load_model

    model_path, data_dir, out_dir = Path(model_path), Path(data_dir), Path(out_dir)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist.")
    index = data_dir / INDEX_NAME
    if not index.is_file():
        raise FileNotFoundError(f"{index} does not exist: run `lss preprocess` first, or point --data at its output.")
    rows, missing = select_indexed_studies(read_jsonl(index), study_ids, index)

    model = load_model(model_path, map_location=device).eval()
    device = torch.device(device)
    sagittal_meter, axial_meter = SegmentationMeter(), SegmentationMeter()
    axial_level_of_case: list[int] = []
    axial_study_of_case: list[int] = []
    sagittal_study_of_case: list[int] = []
    axial_severity_of_case: list[int] = []
    probs, severity, per_study = [], [], []
    raw_logits: dict[str, list[torch.Tensor]] = {path: [] for path in PATHS}
    path_probs: dict[str, list[torch.Tensor]] = {path: [] for path in PATHS}
    severity_calibration = model.calibration
    area_errors: list[float] = []
    argmax_area_errors: list[float] = []  # without the canal offset: the network's own masks
    ap_errors: list[float] = []
    # The same rule on the labelled masks: the floor the pixel grid and the labels' own rasterisation set.
    label_area_errors: list[float] = []
    label_ap_errors: list[float] = []
    has_sagittal, has_axial = [], []
    for start in tqdm(range(0, len(rows), int(batch_size)), desc="evaluate", unit="batch", disable=None):
        chunk = rows[start:start + int(batch_size)]
        cases = [load_case(data_dir / row["path"]) for row in chunk]
        for row, case in zip(chunk, cases, strict=True):
            if case["axial_image"].shape[1] != model.axial_slices:
                raise ValueError(f"study {row['study_id']}: {case['axial_image'].shape[1]} axial slices per level, "
                                 f"the model takes {model.axial_slices}.")
        batch = collate_samples([case_to_sample(c, model.config.sagittal_slices) for c in cases])
        with torch.no_grad():
            out = model(batch["sagittal"].to(device), batch["axial"].to(device), batch["axial_present"].to(device))
            sagittal_only = model(batch["sagittal"].to(device)).severity_logits.float().cpu()
        raw_logits["as_given"].append(out.severity_logits.float().cpu())
        raw_logits["sagittal_only"].append(sagittal_only)
        path_probs["sagittal_only"].append(severity_calibration.probabilities(sagittal_only))

        # Sagittal: the mid-sagittal slice, (Y, Z) pixels of the sagittal crop's affine columns 1 and 2.
        sagittal_spacing = [column_spacing(c["sagittal_affine"], (1, 2)) for c in cases]
        sagittal_dice = sagittal_meter.update(out.sagittal_logits.cpu(), batch["sagittal_target"], sagittal_spacing,
                                              partition=batch["sagittal_partition"])
        # Axial: each level's centre slice, (H, W) pixels of its affine columns 0 and 1; unlabelled levels skipped.
        n_levels = len(LEVELS)
        axial_target = batch["axial_target"].reshape(-1, *batch["axial_target"].shape[2:])
        axial_spacing = [column_spacing(a, (0, 1)) for c in cases for a in c["axial_affines"]]
        labelled = (axial_target >= 0).flatten(1).any(dim=1)
        # The masks as the product makes them: the canal offset fitted on validation applied before the argmax.
        axial_logits = model.canal_offset.apply(out.axial_logits.cpu(), channel_dim=2)
        axial_meter.update(axial_logits.flatten(0, 1), axial_target, axial_spacing)
        # The dural sac measured on the predicted mask (as the report states it) against the measured truth.
        predicted = axial_logits.argmax(dim=2).numpy()
        raw_predicted = out.axial_logits.argmax(dim=2).cpu().numpy()
        study_area_errors: list[list[float | None]] = []
        study_ap_errors: list[list[float | None]] = []
        study_rule_grades: list[list[int]] = []
        for b, case in enumerate(cases):
            study_area_errors.append([None] * n_levels)
            study_ap_errors.append([None] * n_levels)
            study_rule_grades.append([-1] * n_levels)
            for li in range(n_levels):
                if not case["axial_present"][li]:
                    continue
                spacing = axial_spacing[b * n_levels + li]
                sac = dural_sac_mm(predicted[b, li] == Structure.CANAL.index, spacing)
                if sac is not None:
                    # The rule grade of the measured masks: where the grading errors come from, head or masks.
                    study_rule_grades[b][li] = grade_from_measurements(*sac).index
                truth_area, truth_ap = float(case["area_mm2"][li]), float(case["ap_mm"][li])
                if not math.isfinite(truth_area):
                    continue
                area, ap = sac or (0.0, 0.0)  # no sac found: measured as nothing
                area_errors.append(area - truth_area)
                study_area_errors[b][li] = area_errors[-1]
                raw_area = (dural_sac_mm(raw_predicted[b, li] == Structure.CANAL.index, spacing) or (0.0, 0.0))[0]
                argmax_area_errors.append(raw_area - truth_area)
                label = dural_sac_mm(axial_target[b * n_levels + li].numpy() == Structure.CANAL.index, spacing)
                if label is not None:
                    label_area_errors.append(label[0] - truth_area)
                    if math.isfinite(truth_ap):
                        label_ap_errors.append(label[1] - truth_ap)
                if math.isfinite(truth_ap):
                    ap_errors.append(ap - truth_ap)
                    study_ap_errors[b][li] = ap_errors[-1]
        axial_level_of_case.extend(int(i) % n_levels for i in torch.nonzero(labelled).flatten())
        axial_study_of_case.extend(start + int(i) // n_levels for i in torch.nonzero(labelled).flatten())
        axial_severity_of_case.extend(int(batch["severity"].flatten()[i]) for i in torch.nonzero(labelled).flatten())

        p = severity_calibration.probabilities(out.severity_logits.float().cpu(), batch["axial_present"].bool())
        probs.append(p)
        path_probs["as_given"].append(p)
        withheld = severity_calibration.abstains(p)
        severity.append(batch["severity"])
        sagittal_labelled = (batch["sagittal_target"] >= 0).flatten(1).any(dim=1)
        dice_rows = iter(sagittal_dice.tolist())
        for b, row in enumerate(chunk):
            has_sagittal.append(bool(sagittal_labelled[b]))
            has_axial.append(bool(labelled.reshape(-1, n_levels)[b].any()))
            dice = next(dice_rows) if sagittal_labelled[b] else None
            if sagittal_labelled[b]:
                sagittal_study_of_case.append(start + b)
            per_study.append({
                "study_id": str(row["study_id"]),
                "severity_true": [int(v) for v in batch["severity"][b]],
                "severity_pred": [int(v) for v in p[b].argmax(dim=-1)],
                "p_severe": [round(float(v), 6) for v in p[b, :, Severity.SEVERE.index]],
                "abstained": [bool(v) for v in withheld[b]],
                "sagittal_dice_macro": None if dice is None else _nanmean_or_none(dice),
                "area_error_mm2": study_area_errors[b],
                "ap_error_mm": study_ap_errors[b],
                "rule_severity_pred": study_rule_grades[b],
                # The VLM's severity head alone, before the measured grade replaced it at measured levels.
                "head_severity_pred": [int(v) for v in out.head_logits[b].argmax(dim=-1)],
            })

    probs_all, severity_all = torch.cat(probs).numpy(), torch.cat(severity).numpy()
    notes: list[str] = []
    results: dict[str, Any] = {
        "model": {"path": str(model_path.resolve()), "sha256": file_sha256(model_path),
                  "config": model.config.model_dump(mode="json"), "calibration": severity_calibration.as_dict(),
                  "canal_offset": model.canal_offset.as_dict(), "measured_grade": model.measured_grade.as_dict()},
        "data": {"dir": str(data_dir.resolve()), "index": str(index.resolve())},
        "studies": {
            "evaluated": [s["study_id"] for s in per_study],
            "count": len(per_study),
            "split": "all cases of the index" if study_ids is None else "given study ids",
            "missing": missing,
            "with_sagittal_labels": int(sum(has_sagittal)),
            "with_axial_labels": int(sum(has_axial)),
            "with_severity": int((severity_all >= 0).any(axis=1).sum()),
        },
    }
    if missing:
        notes.append(f"{len(missing)} studies of the split are not in the index and were skipped.")

    segmentation: dict[str, Any] = {}
    for view, meter, count in (("sagittal", sagittal_meter, sum(has_sagittal)), ("axial", axial_meter, sum(has_axial))):
        if len(meter) == 0:
            segmentation[view] = None
            notes.append(f"no {view} labels in the evaluated studies: {view} segmentation metrics skipped.")
            continue
        segmentation[view] = meter.compute()
        if view == "axial":
            # The canal where it matters: levels graded Moderate or Severe (narrow, hard to segment).
            canal = np.asarray(meter.per_case()[f"dice_{Structure.CANAL.value}"], dtype=float)
            graded = np.asarray(axial_severity_of_case) >= Severity.MODERATE.index
            values = canal[graded][np.isfinite(canal[graded])] if graded.size == canal.size else np.zeros(0)
            results["canal_moderate_severe"] = {
                "axial_dice_spinal_canal": float(values.mean()) if values.size else float("nan"),
                "levels": int(values.size),
            }
        if count < len(per_study):
            notes.append(f"{len(per_study) - count} of {len(per_study)} studies have no {view} labels and are left "
                         f"out of the {view} segmentation metrics.")
    results["segmentation"] = segmentation
    results["measurements"] = {
        "area_mm2": _error_summary(area_errors),
        "area_mm2_without_offset": _error_summary(argmax_area_errors),
        "ap_mm": _error_summary(ap_errors),
        "area_mm2_label_masks": _error_summary(label_area_errors),
        "ap_mm_label_masks": _error_summary(label_ap_errors),
    }
    if area_errors:
        notes.append("measurements: the dural sac area / AP diameter of the largest predicted canal region on each "
                     "level's centre axial slice, minus the measured truth (bias = mean error); the masks are made "
                     f"with the model's canal offset ({model.canal_offset.offset:+.3f}: {model.canal_offset.note}); "
                     "area_mm2_without_offset: the plain argmax masks; *_label_masks: the same rule on the "
                     "labelled masks (what the pixel grid and the labels allow: no model can measure closer).")
    if any(segmentation.values()):
        notes.append("Dice: a structure absent from both prediction and target is left out (NaN), a structure "
                     "predicted where the target has none scores 0, a structure a case does not label (a real set "
                     "of vertebral bodies only) is not scored there (n/a when no case labels it); HD95 per "
                     "structure in mm (NaN when either mask lacks the structure).")

    flat_p, flat_t = probs_all.reshape(-1, len(SEVERITIES)), severity_all.reshape(-1)
    known = flat_t >= 0
    if known.any():
        sev = severity_metrics(flat_p, flat_t)
        sev.update({k: v for k, v in rsna_score(probs_all, severity_all).items() if k != "n"})
        if not sev["any_severe_defined"]:
            notes.append("every evaluated study has the same any-severe label: the RSNA any_severe term (and so "
                         "rsna_score) is undefined, as in the official metric (scikit-learn's log_loss raises).")
        kp, kt = flat_p[known], flat_t[known]
        calibration = {"top_label": calibration_bins(kp.max(axis=1), kp.argmax(axis=1) == kt, CALIBRATION_BINS)}
        calibration.update({name: calibration_bins(kp[:, k], kt == k, CALIBRATION_BINS)
                            for k, name in enumerate(SEVERITY_NAMES)})
        sev["calibration"] = calibration
        sev["ece_top_label"] = calibration["top_label"]["ece"]
        sev.update({f"ece_{name}": calibration[name]["ece"] for name in SEVERITY_NAMES})
        sev["abstain_threshold"] = model.calibration.abstain_threshold
        sev["paths"] = {path: _path_metrics(torch.cat(path_probs[path]).numpy(), torch.cat(raw_logits[path]).numpy(),
                                            severity_all, model.calibration.abstain_threshold) for path in PATHS}
        sev.update({k: sev["paths"]["as_given"][k] for k in ("coverage", "selective_accuracy",
                                                            "selective_balanced_accuracy", "n_stated",
                                                            "ece_uncalibrated")})
        pairs = [(t, r) for st in per_study for t, r in zip(st["severity_true"], st["rule_severity_pred"],
                                                             strict=True) if t >= 0 and r >= 0]
        if pairs:
            rule_t, rule_p = np.asarray(pairs, dtype=int).T
            rule = severity_metrics(np.eye(len(SEVERITIES))[rule_p], rule_t)
            sev["rule_of_measurements"] = {k: rule[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1",
                                                                 "recall_moderate", "recall_severe",
                                                                 "confusion_matrix")}
            sev["rule_of_measurements"]["coverage"] = float(len(pairs) / max(int(known.sum()), 1))
        if model.measured_grade.fitted:
            head_t, head_p = np.asarray([(t, h) for st in per_study for t, h in zip(
                st["severity_true"], st["head_severity_pred"], strict=True) if t >= 0], dtype=int).reshape(-1, 2).T
            head = severity_metrics(np.eye(len(SEVERITIES))[head_p], head_t)
            sev["head_alone"] = {k: head[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1",
                                                       "recall_moderate", "recall_severe", "confusion_matrix")}
        # What the findings state: a confident grade that the rule grade of the measured masks does not contradict
        # (lss.reporting.findings withholds the others). Only the axial rule is measured here.
        agrees = np.asarray([[r < 0 or r == p for p, r in zip(st["severity_pred"], st["rule_severity_pred"],
                                                               strict=True)] for st in per_study], dtype=bool)
        for st, row in zip(per_study, agrees, strict=True):
            st["stated_pred"] = [p if ok and not a else -1
                                 for p, a, ok in zip(st["severity_pred"], st["abstained"], row, strict=True)]
        sev["stated"] = selective_metrics(flat_p, flat_t, model.calibration.abstain_threshold,
                                          allowed=agrees.reshape(-1))
        sev["stated"]["withheld_for_conflict"] = int((~agrees.reshape(-1) & known).sum())
        results["severity"] = sev
        notes.append(COVERAGE_NOTE + f" Abstention threshold {model.calibration.abstain_threshold:.3f}"
                     + ("" if model.calibration.fitted else " (the model carries no fitted calibration: identity, "
                        "every grade stated)") + "; sagittal_only: every study graded again without its axial input.")
        notes.append("rsna_score covers the spinal canal condition only (its weighted log loss and the "
                     "any_severe_spinal term): it is not the RSNA 2024 leaderboard score, which also averages the "
                     "foraminal and subarticular conditions.")
        if (~known).any():
            notes.append(f"{int((~known).sum())} of {known.size} levels have no known severity and are not scored.")
    else:
        results["severity"] = None
        notes.append("no known severity in the evaluated studies: severity metrics, RSNA score and calibration "
                     "skipped.")

    results["intervals"] = _intervals(per_study, sagittal_meter, sagittal_study_of_case, axial_meter,
                                      axial_study_of_case, axial_severity_of_case)
    notes.append(f"[low, high]: 95% percentile bootstrap intervals over studies ({DEFAULT_RESAMPLES} resamples; "
                 "a study's levels are resampled together).")
    results["per_level"] = _per_level(probs_all, severity_all, axial_meter, axial_level_of_case,
                                      torch.cat(path_probs["sagittal_only"]).numpy(),
                                      model.calibration.abstain_threshold)
    results["per_study"] = per_study
    results["reports"] = None
    if reports and any((row.get("record") or {}).get("reports") for row in rows):
        from lss.evaluation.reports import evaluate_reports

        results["reports"] = evaluate_reports(model_path, data_dir, [str(r["study_id"]) for r in rows],
                                              generator_path, report_style, batch_size, device)
    elif reports:
        notes.append("no reference reports in the evaluated studies: report metrics skipped.")
    results["notes"] = notes

    out_dir.mkdir(parents=True, exist_ok=True)
    results["files"] = {"results_json": str(out_dir / RESULTS_JSON), "results_md": str(out_dir / RESULTS_MD),
                        "plots": _plots(results, out_dir)}
    (out_dir / RESULTS_JSON).write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    (out_dir / RESULTS_MD).write_text(_markdown(results))
    logger.info("evaluate: %d studies, results in %s", len(per_study), out_dir)
    return results


def _error_summary(errors: list[float]) -> dict[str, float | int | None]:
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        return {"n": 0, "bias": None, "mae": None, "median_absolute_error": None}
    return {"n": int(e.size), "bias": float(e.mean()), "mae": float(np.abs(e).mean()),
            "median_absolute_error": float(np.median(np.abs(e)))}


def _dice_macro_of(per_case: dict[str, np.ndarray], names: list[str], rows: np.ndarray) -> float:
    """Macro Dice of the given case rows, as ``SegmentationMeter.compute`` aggregates: per structure, then mean."""
    means = []
    for name in names:
        values = np.asarray(per_case[f"dice_{name}"], dtype=float)[rows]
        values = values[np.isfinite(values)]
        if values.size:
            means.append(values.mean())
    return float(np.mean(means)) if means else float("nan")


def _rows_by_study(study_of_case: list[int]) -> dict[int, list[int]]:
    """Each study's case rows (a sagittal case per study, or one axial case per level)."""
    rows: dict[int, list[int]] = {}
    for row, study in enumerate(study_of_case):
        rows.setdefault(study, []).append(row)
    return rows


def _rows_of(by_study: dict[int, list[int]], idx: np.ndarray) -> np.ndarray:
    """The case rows of a resample of studies (a study drawn twice contributes its rows twice)."""
    return np.asarray([row for study in idx for row in by_study.get(int(study), [])], dtype=int)


def _intervals(per_study: list[dict[str, Any]], sagittal_meter: SegmentationMeter, sagittal_study_of_case: list[int],
               axial_meter: SegmentationMeter, axial_study_of_case: list[int],
               axial_severity_of_case: list[int]) -> dict[str, Any]:
    """95% bootstrap intervals over studies of the severity, Dice and measurement figures.

    Returns:
        ``severity``, ``severity_rule_of_measurements`` and ``severity_stated`` (``confusion_statistics`` of the
        per-study confusions of the model's grades, of the rule grades of the measured masks, and of the grades the
        findings state, over the stated levels) and, where measured,
        ``sagittal_dice_macro``, ``axial_dice_macro``, ``canal_dice_moderate_severe``, ``area_bias``, ``area_mae``,
        ``ap_bias``, ``ap_mae``; each ``{"value", "low", "high"}``.
    """
    n = len(per_study)
    out: dict[str, Any] = {}
    truth = [study["severity_true"] for study in per_study]
    for key, name in (("severity_pred", "severity"), ("rule_severity_pred", "severity_rule_of_measurements"),
                      ("stated_pred", "severity_stated"), ("head_severity_pred", "severity_head_alone")):
        if any(key not in study for study in per_study):
            continue
        confusions = study_confusions(truth, [study[key] for study in per_study], len(SEVERITIES))
        if confusions.sum():
            out[name] = confusion_statistics(confusions)

    def interval(statistic) -> dict[str, float]:
        low, high = bootstrap_interval(statistic, n)
        return {"value": statistic(np.arange(n)), "low": low, "high": high}

    for view, meter, study_of_case in (("sagittal", sagittal_meter, sagittal_study_of_case),
                                       ("axial", axial_meter, axial_study_of_case)):
        if len(meter):
            cases = meter.per_case()
            by_study = _rows_by_study(study_of_case)
            out[f"{view}_dice_macro"] = interval(
                lambda idx, c=cases, m=meter, s=by_study: _dice_macro_of(c, m.names, _rows_of(s, idx)))
    if len(axial_meter):
        canal = np.asarray(axial_meter.per_case()[f"dice_{Structure.CANAL.value}"], dtype=float)
        graded = np.asarray(axial_severity_of_case) >= Severity.MODERATE.index
        axial_rows = _rows_by_study(axial_study_of_case)

        def canal_dice(idx: np.ndarray) -> float:
            rows = _rows_of(axial_rows, idx)
            values = canal[rows][graded[rows]] if rows.size else canal[:0]
            values = values[np.isfinite(values)]
            return float(values.mean()) if values.size else float("nan")

        out["canal_dice_moderate_severe"] = interval(canal_dice)
    for name, key in (("area", "area_error_mm2"), ("ap", "ap_error_mm")):
        errors = [np.asarray([e for e in s.get(key) or [] if e is not None], dtype=float) for s in per_study]
        if sum(e.size for e in errors):
            def pooled(idx: np.ndarray, e=errors) -> np.ndarray:
                return np.concatenate([e[i] for i in idx])

            def mean_of(transform, e=errors):
                return lambda idx: float(np.mean(transform(v))) if (v := pooled(idx, e)).size else np.nan

            out[f"{name}_bias"] = interval(mean_of(lambda v: v))
            out[f"{name}_mae"] = interval(mean_of(np.abs))
    return out


def _nanmean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _path_metrics(probs: np.ndarray, logits: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, Any]:
    """Severity of one path: (B, L, 3) calibrated probabilities and raw logits, (B, L) targets, at a threshold."""
    flat_p, flat_t = probs.reshape(-1, len(SEVERITIES)), targets.reshape(-1)
    metrics = severity_metrics(flat_p, flat_t)
    out = {k: metrics[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "rsna_log_loss", "ece")}
    out["ece_uncalibrated"] = severity_metrics(logits.reshape(-1, len(SEVERITIES)), flat_t, softmax=True)["ece"]
    selective = selective_metrics(flat_p, flat_t, threshold)
    out.update({k: selective[k] for k in ("coverage", "selective_accuracy", "selective_balanced_accuracy",
                                          "n_stated")})
    return out


def _per_level(probs: np.ndarray, targets: np.ndarray, axial_meter: SegmentationMeter,
               axial_levels: list[int], sagittal_probs: np.ndarray | None = None,
               threshold: float = 0.0) -> list[dict[str, Any]]:
    axial_cases = axial_meter.per_case()
    canal = f"dice_{Structure.CANAL.value}"
    levels = np.asarray(axial_levels, dtype=np.int64)
    table = []
    for li, level in enumerate(LEVELS):
        known = targets[:, li] >= 0
        entry: dict[str, Any] = {"level": level, "n": int(known.sum())}
        if known.any():
            metrics = severity_metrics(probs[known, li], targets[known, li])
            entry.update({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "rsna_log_loss")})
            entry["true_counts"] = [int(v) for v in np.bincount(targets[known, li], minlength=len(SEVERITIES))]
            selective = selective_metrics(probs[known, li], targets[known, li], threshold)
            entry.update({k: selective[k] for k in ("coverage", "selective_accuracy")})
            entry["sagittal_only_accuracy"] = (float("nan") if sagittal_probs is None else
                                               severity_metrics(sagittal_probs[known, li],
                                                                targets[known, li])["accuracy"])
        else:
            entry.update(accuracy=float("nan"), balanced_accuracy=float("nan"), rsna_log_loss=float("nan"),
                         true_counts=[0] * len(SEVERITIES), coverage=float("nan"), selective_accuracy=float("nan"),
                         sagittal_only_accuracy=float("nan"))
        at_level = axial_cases[canal][levels == li] if levels.size else np.zeros(0)
        finite = at_level[np.isfinite(at_level)]
        entry[f"axial_{canal}"] = float(finite.mean()) if finite.size else float("nan")
        entry["axial_n"] = int(at_level.size)
        table.append(entry)
    return table


def _plots(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    from lss.evaluation.plots import plot_confusion_matrix, plot_dice, plot_reliability

    files: dict[str, str] = {}
    severity = results["severity"]
    if severity is not None:
        files["confusion_matrix"] = str(plot_confusion_matrix(severity["confusion_matrix"],
                                                              out_dir / PLOTS["confusion_matrix"]))
        calibration = severity["calibration"]
        files["calibration"] = str(plot_reliability(
            calibration["top_label"], {s.value: calibration[name] for s, name in zip(SEVERITIES, SEVERITY_NAMES,
                                                                                      strict=True)},
            out_dir / PLOTS["calibration"]))
    views = {view: {s.value: metrics[f"dice_{s.value}"] for s in list(Structure)[1:]}
             for view, metrics in results["segmentation"].items() if metrics is not None}
    if views:
        files["dice"] = str(plot_dice(views, out_dir / PLOTS["dice"]))
    return files


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _with_interval(value: Any, interval: dict[str, float] | None, digits: int = 3) -> str:
    """``0.850 [0.801, 0.893]``: a figure with its 95% bootstrap interval, when it has one."""
    if not interval or interval.get("low") is None or not np.isfinite(interval.get("low", np.nan)):
        return _f(value, digits)
    return f"{_f(value, digits)} [{_f(interval['low'], digits)}, {_f(interval['high'], digits)}]"


def _grade_table(grades: dict[str, Any], grade_intervals: dict[str, Any], first: str) -> str:
    """One row of grading figures with their intervals (the rule grade of the masks, the head alone)."""
    levels = f"{grades['n']} ({_f(grades['coverage'])})" if "coverage" in grades else str(grades["n"])
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "recall_moderate", "recall_severe")
    return _table([first, "accuracy", "balanced accuracy", "macro-F1", "Moderate recall", "Severe recall"],
                  [[levels, *[_with_interval(grades[k], grade_intervals.get(k)) for k in keys]]])


def _markdown(results: dict[str, Any]) -> str:
    studies = results["studies"]
    intervals = results.get("intervals") or {}
    evaluated = studies["evaluated"]
    shown = ", ".join(evaluated[:40]) + (f" ... and {len(evaluated) - 40} more (all in results.json)"
                                         if len(evaluated) > 40 else "")
    parts = [
        "# Evaluation\n",
        f"- Model: `{results['model']['path']}` (sha256 `{results['model']['sha256'][:16]}`)",
        f"- Data: `{results['data']['index']}`",
        f"- Studies: {studies['count']} ({studies['split']}): {shown}",
        (f"- With labels: {studies['with_sagittal_labels']} sagittal, {studies['with_axial_labels']} axial, "
         f"{studies['with_severity']} with a known severity"),
    ]
    if studies["missing"]:
        parts.append(f"- Not found in the index (skipped): {', '.join(studies['missing'])}")
    parts.append("")

    parts.append("## Segmentation\n")
    segmentation = results["segmentation"]
    views = [v for v in ("sagittal", "axial") if segmentation.get(v) is not None]
    if views:
        # n/a: no evaluated case labels the structure (a real set that labels bodies only is scored on bodies).
        rows = [[s.value.replace("_", " ")]
                + [_f(segmentation[v][f"dice_{s.value}"]) for v in views]
                + [_f(segmentation[v].get(f"hd95_{s.value}", float("nan")), 2) for v in views]
                for s in list(Structure)[1:]]
        rows.append(["**macro Dice** [95% CI]"]
                    + [_with_interval(segmentation[v]["dice_macro"], intervals.get(f"{v}_dice_macro")) for v in views]
                    + [""] * len(views))
        rows.append(["cases"] + [_f(segmentation[v]["n_cases"]) for v in views] + [""] * len(views))
        parts.append(_table(["Structure"] + [f"{v} Dice" for v in views] + [f"{v} HD95 (mm)" for v in views], rows))
        canal = results.get("canal_moderate_severe")
        if canal and canal.get("levels"):
            value = _with_interval(canal["axial_dice_spinal_canal"], intervals.get("canal_dice_moderate_severe"))
            parts.append(f"Axial canal Dice at Moderate/Severe levels ({canal['levels']} levels): {value}\n")
    else:
        parts.append("Skipped: no segmentation labels in the evaluated studies.\n")

    measured = results.get("measurements") or {}
    if (measured.get("area_mm2") or {}).get("n"):
        parts.append("### Dural sac measured on the predicted axial masks vs the truth\n")
        rows = [[f"{name} ({unit})", str(m["n"]), _with_interval(m["bias"], intervals.get(f"{key}_bias"), 2),
                 _with_interval(m["mae"], intervals.get(f"{key}_mae"), 2), _f(m["median_absolute_error"], 2)]
                for name, unit, key, m in (("area", "mm2", "area", measured["area_mm2"]),
                                           ("AP diameter", "mm", "ap", measured["ap_mm"]),
                                           ("area, plain argmax (no canal offset)", "mm2", "-",
                                            measured.get("area_mm2_without_offset") or {"n": 0}),
                                           ("area, labelled masks (the floor)", "mm2", "-",
                                            measured.get("area_mm2_label_masks") or {"n": 0}),
                                           ("AP diameter, labelled masks (the floor)", "mm", "-",
                                            measured.get("ap_mm_label_masks") or {"n": 0}))
                if m.get("n")]
        parts.append(_table(["measurement", "levels", "bias [95% CI]", "mean absolute error [95% CI]",
                             "median absolute error"], rows))

    parts.append("## Severity\n")
    severity = results["severity"]
    if severity is not None:
        names = ["n", "accuracy", "balanced_accuracy", "coverage", "selective_accuracy", "selective_balanced_accuracy",
                 "n_stated", "abstain_threshold", "macro_f1", *[f"recall_{n}" for n in SEVERITY_NAMES],
                 "rsna_log_loss", "any_severe_log_loss", "rsna_score", "log_loss", "ece_top_label",
                 "ece_uncalibrated", *[f"ece_{n}" for n in SEVERITY_NAMES]]
        severity_intervals = intervals.get("severity") or {}
        parts.append(_table(["Metric", "Value [95% CI]"],
                            [[n, _with_interval(severity.get(n), severity_intervals.get(n))] for n in names]))
        parts.append(COVERAGE_NOTE + "\n")
        for key, title, first in (
                ("rule_of_measurements", "The rule grade of the measured masks (no model head: the published cut-offs "
                 "applied to the dural sac area and AP measured on the predicted axial masks)", "levels (coverage)"),
                ("head_alone", "The severity head alone (the grade above is the model's grade from its measured masks "
                 "where a level's sac is measured: `lss.model.measured_grade`; this is the head's own)", "levels")):
            grades = severity.get(key)
            if grades:
                parts.append(f"### {title}\n")
                parts.append(_grade_table(grades, intervals.get(f"severity_{key}") or {}, first))
        stated = severity.get("stated")
        if stated and stated.get("n"):
            si = intervals.get("severity_stated") or {}
            parts.append("### What the findings state (a confident grade the measured masks do not contradict; the "
                         "others are withheld)\n")
            parts.append(_table(["levels stated (coverage)", "withheld: measurements disagree", "accuracy",
                                 "balanced accuracy", "Severe recall", "Severe levels stated Severe"],
                                [[f"{stated['n_stated']} of {stated['n']} ({_f(stated['coverage'])})",
                                  str(stated["withheld_for_conflict"]),
                                  *[_with_interval(stated[k], si.get(n)) for k, n in (
                                      ("selective_accuracy", "accuracy"),
                                      ("selective_balanced_accuracy", "balanced_accuracy"))],
                                  _with_interval(si.get("recall_severe", {}).get("value"), si.get("recall_severe")),
                                  _f(stated["selective_recall_severe"])]]))
            parts.append("Accuracy, balanced accuracy and Severe recall here count the stated levels only; the last "
                         "column is the share of all Severe levels that the findings state as Severe.\n")
        if severity.get("paths"):
            parts.append("### By input path (calibrated; coverage at the abstention threshold "
                         f"{_f(severity.get('abstain_threshold'))})\n")
            labels = {"as_given": "as given (axial where present)", "sagittal_only": "sagittal only (no axial input)"}
            parts.append(_table(
                ["Path", "n", "accuracy", "balanced accuracy", "coverage", "selective accuracy",
                 "selective balanced accuracy", "ECE", "ECE uncalibrated", "RSNA log loss"],
                [[labels.get(path, path), _f(m["n"]), _f(m["accuracy"]), _f(m["balanced_accuracy"]),
                  _f(m["coverage"]), _f(m["selective_accuracy"]), _f(m["selective_balanced_accuracy"]), _f(m["ece"]),
                  _f(m["ece_uncalibrated"]), _f(m["rsna_log_loss"])] for path, m in severity["paths"].items()]))
        parts.append("### Confusion matrix (rows = truth, columns = prediction)\n")
        labels = [s.value for s in SEVERITIES]
        parts.append(_table(["truth \\ predicted", *labels],
                            [[label, *[str(v) for v in row]] for label, row in zip(labels, severity["confusion_matrix"],
                                                                                   strict=True)]))
    else:
        parts.append("Skipped: no known severity in the evaluated studies.\n")

    parts.append("## Per level\n")
    canal = f"axial_dice_{Structure.CANAL.value}"
    parts.append(_table(
        ["Level", "n graded", "accuracy", "balanced accuracy", "coverage", "selective accuracy",
         "sagittal-only accuracy", "RSNA log loss", "true N/M/S", "axial canal Dice"],
        [[e["level"], str(e["n"]), _f(e["accuracy"]), _f(e["balanced_accuracy"]), _f(e.get("coverage")),
          _f(e.get("selective_accuracy")), _f(e.get("sagittal_only_accuracy")), _f(e["rsna_log_loss"]),
          "/".join(str(c) for c in e["true_counts"]), _f(e[canal])] for e in results["per_level"]],
    ))

    if results.get("reports"):
        from lss.evaluation.reports import reports_markdown

        parts.append(reports_markdown(results["reports"]))

    plots = results["files"]["plots"]
    if plots:
        parts.append("## Figures\n")
        parts += [f"- {name.replace('_', ' ')}: ![{name}]({Path(path).name})" for name, path in plots.items()]
        parts.append("")
    if results["notes"]:
        parts.append("## Notes\n")
        parts += [f"- {note}" for note in results["notes"]]
        parts.append("")
    return "\n".join(parts) + "\n"


def format_summary(results: dict[str, Any]) -> str:
    """A few lines for the terminal: the headline numbers and where the files are."""
    lines = [f"evaluate: {results['studies']['count']} studies, model {results['model']['path']}"]
    sagittal = results["segmentation"].get("sagittal")
    if sagittal is not None:
        lines.append(f"  sagittal Dice (macro) {_f(sagittal['dice_macro'])}, "
                     f"canal HD95 {_f(sagittal['hd95_spinal_canal'], 2)} mm")
    severity = results["severity"]
    if severity is not None:
        lines.append(f"  severity accuracy {_f(severity['accuracy'])}, balanced {_f(severity['balanced_accuracy'])}, "
                     f"RSNA score {_f(severity['rsna_score'])}")
        if "coverage" in severity:
            lines.append(f"  confident grades: coverage {_f(severity['coverage'])}, selective accuracy "
                         f"{_f(severity['selective_accuracy'])} (abstain below {_f(severity['abstain_threshold'])}); "
                         f"sagittal-only accuracy {_f(severity['paths']['sagittal_only']['accuracy'])}")
        stated = severity.get("stated")
        if stated:
            lines.append(f"  stated grades (confident, not contradicted by the measured masks): coverage "
                         f"{_f(stated['coverage'])}, accuracy {_f(stated['selective_accuracy'])}, balanced "
                         f"{_f(stated['selective_balanced_accuracy'])}; Severe levels stated Severe "
                         f"{_f(stated['selective_recall_severe'])}")
    for name, block in ((results.get("reports") or {}).get("writers") or {}).items():
        lines.append(f"  {name} reports: CIDEr {_f(block['nlg']['cider'])}, BLEU-4 {_f(block['nlg']['bleu_4'])}, "
                     f"clinical accuracy {_f(block['clinical']['accuracy'])}, macro-F1 "
                     f"{_f(block['clinical']['macro_f1'])}")
    files = results["files"]
    lines.append(f"  results: {files['results_json']}\n           {files['results_md']}")
    for path in files["plots"].values():
        lines.append(f"  figure:  {path}")
    return "\n".join(lines)
