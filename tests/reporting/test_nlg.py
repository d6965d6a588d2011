"""NLG scores with the real pycocoevalcap scorers and Java: identical > paraphrase > unrelated, CIDEr-D's scale, SPICE
never faked, the METEOR Java process closed, clear errors for bad input and for missing Java."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from lss.reporting.nlg import SPICE_NOT_COMPUTED, NLGScorer, nlg_scores, ptb_tokenize

# id -> (reference, paraphrase of it, unrelated text). The last reference has line breaks, as real reports do.
CORPUS: dict[str, tuple[str, str, str]] = {
    "s1": ("Severe central canal stenosis at L4/L5 due to a broad-based disc bulge and ligamentum flavum thickening.",
           ("At L4/L5 there is severe narrowing of the central canal secondary to disc bulging and thickened "
            "ligamenta flava."),
           "Quarterly revenue rose sharply after launch."),
    "s2": ("No significant central canal stenosis at any lumbar level.",
           "The lumbar central canal is patent at every level, without significant stenosis.",
           "Heavy rain delayed trains across Bavaria yesterday."),
    "s3": ("Moderate central canal stenosis at L3/L4 with a dural sac area of 90 mm2.",
           "L3/L4 shows moderate narrowing of the central canal, dural sac area 90 mm2.",
           "Chess engines evaluate millions of positions per second."),
    "s4": ("Disc desiccation and loss of disc height at L5/S1 without compromise of the canal.",
           "At L5/S1 the disc is desiccated and reduced in height, with no compromise of the canal.",
           "Bake bread until golden brown, roughly forty minutes."),
    "s5": (("FINDINGS:\nL4/L5: Severe central canal stenosis (dural sac area 62 mm2, AP diameter 7.9 mm).\n"
            "L5/S1: No significant central canal stenosis.\n\nIMPRESSION:\nSevere central canal stenosis at L4/L5."),
           "Severe narrowing of the central canal at L4/L5, dural sac area 62 mm2;\nthe canal is patent at L5/S1.",
           "Volcanic ash grounded flights over Iceland."),
}
REFERENCES = {key: [texts[0]] for key, texts in CORPUS.items()}
KINDS = ("identical", "paraphrase", "unrelated")


def _meteor_processes() -> list[int]:
    """Ids of this process's children running the METEOR jar (read from /proc: no process library needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"meteor-1.5.jar" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def scored():
    """The three prediction sets scored with one METEOR process (its start is most of this file's time)."""
    with NLGScorer() as scorer:
        scores = {kind: scorer.score({key: texts[i] for key, texts in CORPUS.items()}, REFERENCES)
                  for i, kind in enumerate(KINDS)}
        running = _meteor_processes()
    return {"scores": scores, "running": running, "after": _meteor_processes()}


@pytest.mark.java
def test_identical_text_scores_top(scored):
    same = scored["scores"]["identical"]
    for n in range(1, 5):
        assert same[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert same["rouge_l"] == pytest.approx(1.0)
    assert same["meteor"] == pytest.approx(1.0, abs=1e-3)
    # CIDEr-D of a text identical to its only reference: cosine 1 at every n, times 10.
    assert same["cider"] > 1.0
    assert same["cider"] == pytest.approx(10.0, abs=0.5)
    assert same["n"] == len(CORPUS)


@pytest.mark.java
def test_scores_order_identical_paraphrase_unrelated(scored):
    scores = scored["scores"]
    for metric in ("meteor", "rouge_l", "bleu_1", "bleu_4", "cider"):
        identical, paraphrase, unrelated = (scores[kind][metric] for kind in KINDS)
        assert identical > paraphrase > unrelated, (metric, identical, paraphrase, unrelated)
    assert scores["unrelated"]["cider"] < 0.05
    assert scores["unrelated"]["bleu_4"] < 0.01
    assert scores["paraphrase"]["cider"] < scores["identical"]["cider"] / 2


@pytest.mark.java
def test_spice_is_explained_not_faked(scored):
    for scores in scored["scores"].values():
        assert scores["spice"] == SPICE_NOT_COMPUTED
        assert isinstance(scores["spice"], str) and "not computed" in scores["spice"]
        numbers = {key: value for key, value in scores.items() if key != "spice"}
        assert set(numbers) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "n"}
        assert all(isinstance(value, (int, float)) for value in numbers.values())


@pytest.mark.java
def test_meteor_java_process_is_closed(scored):
    assert len(scored["running"]) == 1  # the check sees the process while it runs...
    assert scored["after"] == []  # ...and it is gone once the scorer is closed


@pytest.mark.java
def test_tokenizer_matches_pycocoevalcap_and_keeps_reports_on_one_line():
    texts = ["L4/L5: Severe stenosis (dural sac area 62 mm2, AP diameter 7.9 mm).", "Patent canal; no stenosis!",
             "Ünïcode “quotes” at L5-S1."]
    ours = ptb_tokenize(texts)
    theirs = PTBTokenizer().tokenize({str(i): [{"caption": text}] for i, text in enumerate(texts)})
    assert ours == [theirs[str(i)][0] for i in range(len(texts))]
    assert ours[0] == "l4/l5 severe stenosis -lrb- dural sac area 62 mm2 ap diameter 7.9 mm -rrb-"
    # A report's line breaks (and the Unicode separators Java also breaks on) must not shift texts between ids.
    assert ptb_tokenize(["FINDINGS:\nL4/L5: severe.\r\nL5/S1: normal.\u2028End", "next"]) == [
        "findings l4/l5 severe l5/s1 normal end", "next"]


def test_cider_idf_is_degenerate_for_a_single_item():
    # As documented: IDF comes from the evaluated references, and with one item every n-gram has IDF 0.
    score, _ = Cider().compute_score({"a": ["severe central canal stenosis at l4/l5"]},
                                     {"a": ["severe central canal stenosis at l4/l5"]})
    assert score == 0.0


def test_mismatched_ids_are_named():
    with pytest.raises(ValueError, match=r"same ids.*without a reference: \['extra'\].*without a prediction: \['s2'\]"):
        nlg_scores({"s1": "text", "extra": "text"}, {"s1": ["text"], "s2": ["text"]})


@pytest.mark.parametrize(
    "predictions, references, error, message",
    [
        ({}, {}, ValueError, "empty"),
        ({"a": "text"}, {"a": "text"}, TypeError, "wrap a single reference in a list"),
        ({"a": "text"}, {"a": []}, ValueError, "reference list of 'a' is empty"),
        ({"a": "text"}, {"a": ["  \n"]}, ValueError, "empty or whitespace"),
        ({"a": None}, {"a": ["text"]}, TypeError, "prediction of 'a' must be a string"),
        ({"a": "text"}, {"a": [3]}, TypeError, "every reference of 'a' must be a string"),
    ],
)
def test_bad_input_is_rejected_before_java_starts(predictions, references, error, message):
    with pytest.raises(error, match=message):
        nlg_scores(predictions, references)


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH without java on it
    with pytest.raises(RuntimeError, match="Java"):
        nlg_scores({"a": "severe stenosis"}, {"a": ["severe stenosis"]})
