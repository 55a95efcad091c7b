"""examples/charlm: a character-level language model on a text file, a GRU against a
causal CNN, run through ablate from the example's folder as its README says. The
README's text is /usr/share/common-licenses/GPL-3; here the real loader reads a small
text the test writes."""
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "charlm"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "five", "boxing",
         "wizards", "jump", "quickly"]


def runs_in(db: Path):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["params.seed"].notna()] if "params.seed" in df else df


@pytest.fixture
def text(tmp_path) -> Path:
    """About 8,000 characters of sentences drawn from a small word list: learnable."""
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(4, 10))).capitalize() + "." for _ in range(180)]
    path = tmp_path / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def charlm(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import charlm_study.data
    import charlm_study.models
    return charlm_study


def test_the_windows_are_next_character_pairs_and_the_splits_share_a_vocabulary_but_no_text(text, charlm):
    raw = text.read_text(encoding="utf-8")
    train = charlm.data.CharWindows("train", path=str(text), seq_len=32, stride=8)
    test = charlm.data.CharWindows("test", path=str(text), seq_len=32)
    assert train.chars == test.chars == sorted(set(raw)) and train.vocab_size == len(set(raw))
    x, y = train[3]
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (32,)
    assert torch.equal(x[1:], y[:-1]) and train.decode(x) + train.decode(y[-1:]) == raw[24:24 + 33]
    cut = int(0.9 * len(raw))
    assert test.decode(test[0][0]) == raw[cut:cut + 32] and len(test) == (len(raw) - cut - 1) // 32
    last = train.windows[-1]
    assert train.decode(last) in raw[:cut]  # the last training window ends before the test text starts


def test_both_models_map_ids_to_causal_next_character_logits(charlm):
    x = torch.randint(0, 20, (3, 40))
    for model in (charlm.models.GRU(20), charlm.models.CausalCNN(20)):
        out = model(x)
        assert out.shape == (3, 40, 20)
        changed = x.clone()
        changed[:, 25:] = (changed[:, 25:] + 1) % 20
        assert torch.allclose(model(changed)[:, :25], out[:, :25], atol=1e-6)  # no peeking at the future


def unigram_bits(raw: str, train_fraction: float = 0.9) -> float:
    """Bits per character of the test text under the training text's character
    frequencies (add-one): the best a model that ignores context can do, about."""
    cut = int(train_fraction * len(raw))
    counts = {c: raw[:cut].count(c) + 1 for c in set(raw)}
    total = sum(counts.values())
    return -sum(math.log2(counts[c] / total) for c in raw[cut + 1:]) / len(raw[cut + 1:])


def test_a_gru_and_a_cnn_sweep_is_scored_in_bits_per_character_and_learns(tmp_path, text):
    db = tmp_path / "mlflow.db"
    out = run_cli(["--config-dir", "conf", "-m", "experiment=charlm", "model=gru,cnn", "seed=0",
                   f"data.train.path={text}", "train.epochs=3", f"tracking.uri=sqlite:///{db}",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false"],
                  cwd=EXAMPLE, env={"PYTHONPATH": str(EXAMPLE)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(db)
    assert len(df) == 2 and set(df["status"]) == {"FINISHED"}
    assert sorted(df["params.model"]) == ["cnn", "gru"]
    assert set(df["tags.ablate.objective.metric"]) == {"bpc"} and set(df["tags.ablate.objective.goal"]) == {"min"}
    vocab = len(set(text.read_text(encoding="utf-8")))
    assert set(df["params.data.vocab_size"]) == {str(vocab)} and set(df["params.data.seq_len"]) == {"64"}
    assert set(df["params.data.test.path"]) == {str(text)}  # the test split follows the training split's file
    context_free = unigram_bits(text.read_text(encoding="utf-8"))  # 4.7 here; untrained, about log2(vocab) = 5.3
    for _, run in df.iterrows():
        bpc = run["metrics.final_test_bpc"]
        assert math.isfinite(bpc) and bpc < context_free - 1, (run["params.model"], bpc, context_free)
    assert (tmp_path / "multirun" / "report" / "report.md").exists()
