"""The learned report generator: exact tokenizer round trip, learning feature-dependent reports, save/load,
determinism and input validation. Small models on CPU; the whole file runs in well under a minute."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lss.anatomy import LEVELS
from lss.config import ModelConfig, ReportConfig
from lss.data.manifest import LevelRecord
from lss.data.synth.reports import REPORT_STYLES, write_report
from lss.reporting.generator import (
    ReportGenerator,
    build_tokenizer,
    load_generator,
    save_generator,
    train_generator,
)

F = 16  # feature size of the synthetic studies
PER_PROTOTYPE = 6

# Four studies that differ in severity and canal area at every level: each prototype has its own report.
SEVERITIES = [
    ["Normal/Mild"] * 5,
    ["Normal/Mild", "Moderate", "Normal/Mild", "Severe", "Normal/Mild"],
    ["Severe", "Normal/Mild", "Normal/Mild", "Normal/Mild", "Moderate"],
    ["Normal/Mild", "Normal/Mild", "Moderate", "Moderate", "Normal/Mild"],
]
AREAS = [[180, 170, 160, 150, 140], [150, 95, 140, 60, 130], [55, 160, 150, 140, 90], [170, 160, 85, 80, 150]]

SMALL = {"layers": 1, "hidden": 32, "heads": 2, "batch_size": 8, "learning_rate": 1e-2, "max_new_tokens": 160}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small trains several times faster on one thread than on two cores shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _levels(prototype: int) -> list[LevelRecord]:
    return [LevelRecord(level=level, severity=severity, area_mm2=area)
            for level, severity, area in zip(LEVELS, SEVERITIES[prototype], AREAS[prototype], strict=True)]


def _prototype_data(seed: int = 0):
    """Features = one of 4 random prototypes + noise; the concise report of that prototype is the target."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(4, len(LEVELS), F)).astype(np.float32)
    labels = np.repeat(np.arange(4), PER_PROTOTYPE)
    features = prototypes[labels] + 0.1 * rng.normal(size=(len(labels), len(LEVELS), F)).astype(np.float32)
    texts = [write_report(_levels(k), "concise", np.random.default_rng(k)) for k in range(4)]
    return prototypes, features, [{"concise": texts[k]} for k in labels], texts


@pytest.fixture(scope="module")
def trained():
    prototypes, features, reports, texts = _prototype_data()
    generator, history = train_generator(features, reports, ReportConfig(**SMALL, epochs=60))
    return generator, history, prototypes, texts


def _hand_levels() -> list[LevelRecord]:
    findings = [{}, {"disc_bulging": True}, {"lf_thickening": True, "dark_disc": True},
                {"disc_bulging": True, "lf_thickening": True, "disc_narrowing": True}, {}]
    return [
        LevelRecord(level=level, severity=severity, area_mm2=area, ap_mm=ap, findings=found)
        for level, severity, area, ap, found in zip(
            LEVELS, ["Normal/Mild", "Normal/Mild", "Moderate", "Severe", None],
            [198.4, 92.0, 81.7, 54.2, None], [13.3, 10.1, 9.4, 6.0, None], findings, strict=True)
    ]


def test_tokenizer_round_trip_on_synthetic_reports():
    texts = [write_report(_hand_levels(), style, np.random.default_rng(seed))
             for style in REPORT_STYLES for seed in range(3)]
    assert any("\n" in text for text in texts) and any("200 mm2" in text for text in texts)  # 198.4 to the nearest 5
    tokenizer = build_tokenizer(texts, list(REPORT_STYLES))
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    pieces = tokenizer.tokenize("dural sac area 198 mm2,\nAP")
    assert pieces == ["dural", " ", "sac", " ", "area", " ", "1", "9", "8", " ", "mm", "2", ",", "\n", "AP"]
    # Unknown words become [UNK]; known ones around them survive.
    assert tokenizer.decode(tokenizer("L5/S1 spondylolisthesis")["input_ids"]) == "L5/S1 [UNK]"
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]}
    assert ids == {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3}
    assert {f"[style:{style}]" for style in REPORT_STYLES} <= set(tokenizer.all_special_tokens)


def test_build_tokenizer_errors():
    with pytest.raises(ValueError, match="non-empty text"):
        build_tokenizer(["", ""], ["concise"])
    with pytest.raises(ValueError, match="at least one style"):
        build_tokenizer(["a text"], [])
    with pytest.raises(ValueError, match="duplicate"):
        build_tokenizer(["a text"], ["concise", "concise"])
    with pytest.raises(ValueError, match="style names"):
        build_tokenizer(["a text"], ["two words"])


def test_learns_the_report_of_each_feature_prototype(trained):
    """Every prototype has its own report, so writing the right one needs the cross-attention to the features."""
    generator, history, prototypes, texts = trained
    losses = history["train_loss"]
    assert len(losses) == 60 and history["val_loss"] == []
    assert losses[-1] < 0.1 * losses[0]
    assert not generator.training
    rng = np.random.default_rng(123)
    unseen = prototypes + 0.1 * rng.normal(size=prototypes.shape).astype(np.float32)  # new noise around each
    assert generator.generate(torch.from_numpy(unseen), "concise") == texts
    # Other order of studies, other order of reports: the text follows the features.
    order = [2, 0, 3, 1]
    assert generator.generate(unseen[order], "concise") == [texts[k] for k in order]


def test_save_load_round_trip(trained, tmp_path):
    generator, _, prototypes, _ = trained
    folder = save_generator(generator, tmp_path / "generator")
    assert {p.name for p in folder.iterdir()} >= {"decoder", "tokenizer", "projection.safetensors", "generator.json"}
    loaded = load_generator(folder)
    assert isinstance(loaded, ReportGenerator) and not loaded.training
    assert loaded.styles == generator.styles == ("concise",)
    assert loaded.config == generator.config and loaded.max_positions == generator.max_positions
    assert loaded.generate(prototypes, "concise") == generator.generate(prototypes, "concise")
    features = torch.from_numpy(prototypes)
    inputs = generator.encode(["Central canal: L5/S1 no stenosis."], ["concise"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(features[:1], **inputs).logits, generator(features[:1], **inputs).logits)

    meta = json.loads((folder / "generator.json").read_text())
    meta["format_version"] = 99
    (folder / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        load_generator(folder)


def test_load_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_generator(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a report generator folder"):
        load_generator(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        save_generator(trained[0], tmp_path / "file")


def test_training_is_deterministic_with_validation():
    _, features, reports, _ = _prototype_data(seed=1)
    config = ReportConfig(**SMALL, epochs=3, seed=7)
    state = torch.random.get_rng_state()
    first, history = train_generator(features[:16], reports[:16], config, features[16:], reports[16:])
    torch.testing.assert_close(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    second, again = train_generator(features[:16], reports[:16], config, features[16:], reports[16:])
    assert history == again and len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert all(np.isfinite(history["val_loss"]))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    _, other = train_generator(features[:16], reports[:16], config.model_copy(update={"seed": 8}))
    assert other["train_loss"] != history["train_loss"]


def test_generates_from_lss_model_level_features():
    """The generator reads the vision-language model's per-level features, whatever their size."""
    from lss.model.prompts import default_prompts
    from lss.model.vlm import LSSModel

    torch.manual_seed(0)
    # Stored prompt embeddings stand in for the text encoder: only the level features matter here.
    model = LSSModel(ModelConfig(base_channels=8, attention_dim=32),
                     prompt_embeddings=torch.randn(len(default_prompts().all()), 64))
    with torch.no_grad():
        level_features = model.eval()(torch.randn(2, 3, 64, 96)).level_features
    texts = [write_report(_hand_levels(), style, np.random.default_rng(0)) for style in REPORT_STYLES]
    tokenizer = build_tokenizer(texts, list(REPORT_STYLES))
    generator = ReportGenerator(level_features.shape[-1], tokenizer,
                                ReportConfig(layers=1, hidden=32, heads=2, max_new_tokens=8), level_features.shape[1],
                                max_positions=512)
    reports = generator.generate(level_features, "narrative")
    assert len(reports) == 2 and all(isinstance(report, str) for report in reports)
    assert generator.generate(level_features, "narrative") == reports  # greedy: deterministic
    inputs = generator.encode(texts[:2], ["structured", "concise"])
    out = generator(level_features, **inputs)
    assert out.logits.shape == (*inputs["input_ids"].shape, len(tokenizer)) and torch.isfinite(out.loss)
    # Padding and the [style] [BOS] prompt are not scored.
    assert (inputs["labels"][:, :2] == -100).all()
    assert (inputs["labels"][inputs["attention_mask"] == 0] == -100).all()


def test_unknown_style(trained):
    generator, _, prototypes, _ = trained
    with pytest.raises(ValueError, match=r"unknown report style 'narrative'.*\['concise'\]"):
        generator.generate(prototypes, "narrative")
    with pytest.raises(ValueError, match="unknown report style"):
        generator.encode(["text"], ["structured"])


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((4, F), np.float32), r"shape \(N, L, F\)"),
        (np.zeros((4, len(LEVELS), F + 1), np.float32), r"shape \(B, 5, 16\)"),
        (np.zeros((4, 4, F), np.float32), r"shape \(B, 5, 16\)"),
        (np.full((4, len(LEVELS), F), np.nan, np.float32), "NaN"),
    ],
)
def test_generate_validates_features(trained, features, message):
    with pytest.raises(ValueError, match=message):
        trained[0].generate(features, "concise")


def test_train_validates_inputs():
    _, features, reports, _ = _prototype_data()
    config = ReportConfig(**SMALL, epochs=1)
    with pytest.raises(ValueError, match="has 23 entries but the features have 24"):
        train_generator(features, reports[:-1], config)
    with pytest.raises(ValueError, match="non-empty mapping"):
        train_generator(features, [*reports[:-1], {}], config)
    with pytest.raises(ValueError, match="non-empty string"):
        train_generator(features, [*reports[:-1], {"concise": ""}], config)
    with pytest.raises(ValueError, match=r"shape \(N, L, F\)"):
        train_generator(features[:, 0], reports, config)
    with pytest.raises(ValueError, match="both val_features and val_reports"):
        train_generator(features, reports, config, val_features=features)
    with pytest.raises(ValueError, match="no training report has"):
        train_generator(features, reports, config, features[:1], [{"structured": "text"}])
    with pytest.raises(ValueError, match=r"val_features must have shape \(M, 5, 16\)"):
        train_generator(features, reports, config, features[:1, :, :3], [{"concise": "text"}])
