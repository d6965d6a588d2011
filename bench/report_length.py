"""Benchmark: what CIDEr-D can say about the reports on a set, measured with the writer fed the true findings.

    python bench/report_length.py                                  # the current fixed evaluation set
    python bench/report_length.py --style concise                  # the concise writer against concise references

For every study of a preprocessed set with reference reports, the grounded writer (``lss.reporting.grounded``) writes
from the true grades and measurements (the upper bound of ``lss evaluate``'s report table: no model involved). The
benchmark prints that text's BLEU-4, ROUGE-L and CIDEr-D against the study's reference, the lengths of both in PTB
tokens, and CIDEr with the length penalty switched off (sigma 10^6), so that what the penalty removes is visible.

pycocoevalcap's ``Cider`` is CIDEr-D: its Gaussian length penalty (sigma 6 tokens) multiplies each item's score by
exp(-d^2 / 72) for a length difference of d tokens, so a text 20 tokens shorter than its reference keeps 0.4% of its
score whatever words it shares.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider

from lss.config import grounded_style
from lss.evaluation.reports import true_findings
from lss.reporting.grounded import GroundedReportWriter
from lss.reporting.nlg import NLGScorer, ptb_tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/evalset300/pre", help="a preprocessing output folder whose "
                        "studies carry reference reports (synthetic data)")
    parser.add_argument("--style", default="structured", help="the reference style the writer is scored against")
    args = parser.parse_args()
    index = Path(args.data) / "preprocessed.jsonl"
    if not index.is_file():
        parser.error(f"--data {args.data}: no preprocessed.jsonl there (run `lss synth` and `lss preprocess`)")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if args.style in ((r.get("record") or {}).get("reports") or {})]
    if len(rows) < 2:
        parser.error(f"--data {args.data}: fewer than 2 studies with a {args.style!r} reference report")
    # The writer in the references' style where it writes it (structured, concise), else structured.
    writer = GroundedReportWriter(grounded_style(args.style))
    texts = {r["study_id"]: writer.write(true_findings(r["study_id"], r["record"])).text for r in rows}
    references = {r["study_id"]: [r["record"]["reports"][args.style]] for r in rows}
    with NLGScorer() as scorer:
        scores = scorer.score(texts, references)
    ids = sorted(texts)
    tokens = ptb_tokenize([texts[i] for i in ids] + [references[i][0] for i in ids])
    res = {i: [tokens[k]] for k, i in enumerate(ids)}
    gts = {i: [tokens[len(ids) + k]] for k, i in enumerate(ids)}
    no_penalty, _ = Cider(sigma=1e6).compute_score(gts, res)
    written = np.array([len(res[i][0].split()) for i in ids])
    reference = np.array([len(gts[i][0].split()) for i in ids])
    gap = reference - written
    print(f"{len(ids)} studies of {args.data}; the grounded writer ({writer.style!r} style) fed the true findings "
          f"against the {args.style!r} references")
    print("| BLEU-4 | ROUGE-L | CIDEr-D (sigma 6) | CIDEr, no length penalty | tokens written (median) | "
          "tokens in the reference (median) | reference - written (median; min, max) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {scores['bleu_4']:.3f} | {scores['rouge_l']:.3f} | {scores['cider']:.3f} | {no_penalty:.3f} | "
          f"{np.median(written):.0f} | {np.median(reference):.0f} | {np.median(gap):.0f}; {gap.min()}, {gap.max()} |")


if __name__ == "__main__":
    main()
