"""Natural-language-generation scores of generated reports against reference reports, with pycocoevalcap.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D are computed exactly as the MS-COCO caption evaluation does (the scores
report-generation papers quote): texts are PTB-tokenized and lower-cased by Stanford CoreNLP, punctuation tokens are
dropped, and the pycocoevalcap scorers run on the tokens. SPICE is not computed: it needs the Stanford CoreNLP models,
which pycocoevalcap downloads at run time, and the platform runs offline.

``nlg_scores`` scores one set of reports; ``NLGScorer`` scores several while keeping one METEOR Java process, whose
start (loading METEOR's paraphrase table) is the slow part.

Java (8 or later, ``java`` on ``PATH``) is required: the PTB tokenizer and METEOR are Java programs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

__all__ = ["nlg_scores", "NLGScorer", "ptb_tokenize", "SPICE_NOT_COMPUTED"]

SPICE_NOT_COMPUTED = (
    "not computed: SPICE needs the Stanford CoreNLP models, which pycocoevalcap downloads at run time; "
    "this platform runs offline"
)

_JAVA_HINT = "install a Java runtime (8 or later) and put `java` on PATH"


def _check_inputs(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise TypeError(
            f"predictions and references must be mappings from id to text(s), got {type(predictions).__name__} "
            f"and {type(references).__name__}."
        )
    if not predictions:
        raise ValueError("predictions is empty: there is nothing to score.")
    missing_refs = [key for key in predictions if key not in references]
    missing_preds = [key for key in references if key not in predictions]
    if missing_refs or missing_preds:
        raise ValueError(
            "predictions and references must have the same ids; "
            f"without a reference: {sorted(map(str, missing_refs))}, "
            f"without a prediction: {sorted(map(str, missing_preds))}."
        )
    for key, text in predictions.items():
        if not isinstance(text, str):
            raise TypeError(f"the prediction of {key!r} must be a string, got {type(text).__name__}.")
    for key, refs in references.items():
        # A bare string is a Sequence[str] too; scoring it would treat every character as a reference.
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(
                f"the references of {key!r} must be a list of strings, got {type(refs).__name__}"
                + (" (wrap a single reference in a list)." if isinstance(refs, str) else ".")
            )
        if len(refs) == 0:
            raise ValueError(f"the reference list of {key!r} is empty; every id needs at least one reference.")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"every reference of {key!r} must be a string, got {type(ref).__name__}.")
            if not ref.strip():
                raise ValueError(f"a reference of {key!r} is empty or whitespace only.")
    return list(predictions)


def _one_line(text: str) -> str:
    # The tokenizer runs with -preserveLines, one text per line, so any line break inside a report (including the
    # Unicode separators Java also breaks on) would shift every later text onto the wrong id.
    return " ".join(text.splitlines())


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            f"NLG scoring needs Java for the PTB tokenizer and METEOR, but `java` is not on PATH; {_JAVA_HINT}."
        )
    return java


def ptb_tokenize(texts: list[str]) -> list[str]:
    """PTB-tokenizes texts with the jar, flags and punctuation list of pycocoevalcap's ``PTBTokenizer``.

    ``PTBTokenizer.tokenize`` writes its temporary file into its own package folder (site-packages), which fails
    where site-packages is read-only and races between concurrent evaluations; this runs the same command on a
    temporary file in the system temporary folder instead, so the tokens are identical.
    """
    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    lines = [_one_line(text) for text in texts]
    handle, path = tempfile.mkstemp(prefix="lss_ptb_", suffix=".txt")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write("\n".join(lines).encode("utf-8"))
        cmd = [_java(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        try:
            done = subprocess.run(cmd, capture_output=True, check=False)
        except OSError as error:
            raise RuntimeError(f"could not start Java for the PTB tokenizer ({error}); {_JAVA_HINT}.") from error
    finally:
        os.remove(path)
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()[-1000:]
        raise RuntimeError(f"the Java PTB tokenizer failed (exit code {done.returncode}): {stderr}")
    out = done.stdout.decode("utf-8", "replace").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"the Java PTB tokenizer returned {len(out)} lines for {len(lines)} texts.")
    # "-LRB-" etc. are listed upper-case but the output is lower-case, so "-lrb-" stays, as in the COCO evaluation.
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in out[: len(lines)]]


def _close_meteor(meteor: Meteor) -> None:
    # pycocoevalcap 1.2's Meteor has no close(), only __del__, which runs whenever the garbage collector gets to it
    # and first takes the scorer's lock: after a compute_score that raised, that lock is still held and __del__
    # would block forever. End the Java process here and free the lock so that a later __del__ is a no-op.
    process = meteor.meteor_p
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    process.kill()
    process.wait()
    if meteor.lock.locked():
        meteor.lock.release()


class NLGScorer:
    """Scores sets of generated reports, keeping one METEOR Java process for all of them until closed.

    Starting METEOR loads its 60 MB paraphrase table, which takes 5-25 s depending on the machine's load; scoring
    is then fast. Use this class to score several sets (every validation epoch, several writers) and ``nlg_scores``
    for one set. The Java process starts on the first ``score`` and ends on ``close`` (or leaving a ``with``
    block); METEOR keeps no state between calls, so the scores are the same as ``nlg_scores``'s.

    Example::

        with NLGScorer() as scorer:
            learned = scorer.score(learned_reports, references)
            grounded = scorer.score(grounded_reports, references)
    """

    def __init__(self) -> None:
        self._meteor: Meteor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the METEOR Java process, if one is running; the scorer can still be used (it starts a new one)."""
        if self._meteor is not None:
            meteor, self._meteor = self._meteor, None
            _close_meteor(meteor)

    def _meteor_score(self, gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
        if self._meteor is None:
            _java()
            try:
                self._meteor = Meteor()
            except OSError as error:
                raise RuntimeError(f"could not start Java for METEOR ({error}); {_JAVA_HINT}.") from error
        meteor = self._meteor
        try:
            score, _ = meteor.compute_score(gts, res)
        except (OSError, ValueError) as error:
            # The Java process died (no memory for its 2 GB heap, a broken jar, ...): its stderr says why.
            meteor.meteor_p.kill()
            stderr = meteor.meteor_p.stderr.read().decode("utf-8", "replace").strip()[-1000:]
            self.close()
            raise RuntimeError(f"METEOR's Java process failed ({error!r}): {stderr}") from error
        return float(score)

    def score(self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float | str]:
        """The scores of one set of reports; see ``nlg_scores`` for what they are and what is raised."""
        ids = _check_inputs(predictions, references)
        ref_lists = [list(references[key]) for key in ids]
        tokens = ptb_tokenize([predictions[key] for key in ids] + [ref for refs in ref_lists for ref in refs])
        res = {key: [tokens[i]] for i, key in enumerate(ids)}
        gts, start = {}, len(ids)
        for key, refs in zip(ids, ref_lists, strict=True):
            gts[key] = tokens[start : start + len(refs)]
            start += len(refs)

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        scores: dict[str, float | str] = {f"bleu_{n}": float(value) for n, value in enumerate(bleu, start=1)}
        scores.update(meteor=self._meteor_score(gts, res), rouge_l=float(rouge), cider=float(cider))
        scores.update(spice=SPICE_NOT_COMPUTED, n=len(ids))
        return scores


def nlg_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float | str]:
    """Corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated reports.

    Texts are PTB-tokenized (lower-cased, punctuation dropped) as in the COCO caption evaluation; line breaks in a
    report are read as spaces. How each score is aggregated over the corpus follows pycocoevalcap:

    - BLEU-n: corpus BLEU (n-gram counts pooled over all items, brevity penalty from the closest reference length).
    - METEOR: METEOR 1.5 (``-l en -norm``) over the pooled statistics of all items, not a mean of item scores.
    - ROUGE-L: mean over items of the LCS F-measure (beta 1.2) against the best-matching reference.
    - CIDEr: pycocoevalcap's ``Cider`` is CIDEr-D (clipped n-gram counts, Gaussian length penalty, sigma 6, x10),
      the mean over items; a text identical to its only reference scores about 10.

    CIDEr's IDF weights are computed from the references of the evaluated set itself, so a CIDEr value depends on
    the whole set and is comparable only between runs on the same references. An n-gram found in every item's
    references weighs 0; with a single item every n-gram does, so CIDEr is 0 whatever the text: score several items.

    Args:
        predictions: generated report per id.
        references: one or more reference reports per id (a list, even for one); the same ids as ``predictions``.

    Returns:
        "bleu_1".."bleu_4", "meteor", "rouge_l", "cider" (floats), "n" (the number of predictions scored) and
        "spice" (a string saying why SPICE is not computed; never a number).

    Raises:
        TypeError: when a text is not a string, or the references of an id are not a list of strings.
        ValueError: when the ids of the two mappings differ (the message lists them), nothing is given, or an id has
            no reference or an empty one.
        RuntimeError: when Java is missing or one of the Java tools (PTB tokenizer, METEOR) fails.
    """
    # The METEOR process started for this one set ends before returning, also when scoring fails.
    with NLGScorer() as scorer:
        return scorer.score(predictions, references)
