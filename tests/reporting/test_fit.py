"""The learned report generator end to end: `lss train-reporter` on a model's features, scored by `lss evaluate`
beside the grounded writer, and used by `lss diagnose` when the config selects it."""

from __future__ import annotations

import json

import pytest

from lss.cli import main
from lss.config import load_config
from lss.inference import Diagnoser

SMALL = ["--set", "report.epochs=2", "--set", "report.layers=1", "--set", "report.hidden=32", "--set",
         "report.heads=2", "--set", "report.max_new_tokens=40", "--set", "report.batch_size=4"]


@pytest.fixture(scope="module")
def trained(synth_nifti, preprocessed_nifti, tiny_model_file, tmp_path_factory):
    root, records = synth_nifti
    data = preprocessed_nifti
    ids = [r.study_id for r in records]
    split = tmp_path_factory.mktemp("split") / "split.json"
    split.write_text(json.dumps({"train": ids[:1], "val": ids[1:], "test": ids[1:]}))
    out = tmp_path_factory.mktemp("reporter") / "generator"
    code = main(["train-reporter", "--model", str(tiny_model_file), "--data", str(data), "--split", str(split),
                 "--out", str(out), *SMALL])
    assert code == 0
    return {"data": data, "split": split, "generator": out, "model": tiny_model_file, "records": records}


def test_training_writes_a_loadable_generator_and_its_history(trained):
    history = json.loads((trained["generator"] / "history.json").read_text())
    assert history["train_studies"] == 1 and history["val_studies"] == 1
    assert len(history["train_loss"]) == 2 and len(history["val_loss"]) == 2


@pytest.mark.java
def test_evaluate_scores_both_writers_in_one_table(trained, tmp_path, capsys):
    code = main(["evaluate", "--model", str(trained["model"]), "--data", str(trained["data"]), "--out",
                 str(tmp_path), "--split", str(trained["split"]), "--split-key", "test", "--generator",
                 str(trained["generator"]), *SMALL])
    assert code == 0
    assert "learned reports: CIDEr" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    writers = results["reports"]["writers"]
    assert set(writers) == {"grounded", "learned", "grounded, true findings (upper bound)"}
    for block in writers.values():
        assert 0 <= block["clinical"]["accuracy"] <= 1 and block["nlg"]["cider"] >= 0
    table = (tmp_path / "results.md").read_text()
    assert "| grounded |" in table and "| learned |" in table


def test_diagnose_uses_the_learned_writer_when_configured(trained, tmp_path):
    config = load_config(None, overrides=["report.writer=learned", f"report.generator_path={trained['generator']}",
                                          "report.max_new_tokens=40"])
    record = trained["records"][0]
    diagnosis = Diagnoser(trained["model"], config).diagnose_record(record, tmp_path)
    assert diagnosis.report.writer == "learned"
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["report"]["writer"] == "learned" and len(document["findings"]["levels"]) == 5
    with pytest.raises(ValueError, match="generator_path"):
        Diagnoser(trained["model"], load_config(None, overrides=["report.writer=learned"]))
