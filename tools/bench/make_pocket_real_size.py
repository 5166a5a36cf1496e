#!/usr/bin/env python3
"""Real-size random-weight Pocket TTS models, saved by the reference (``pocket-tts`` 4.0.1), for
the speed comparison of ``tools/bench/pocket_compare.sh`` and ``benches/pocket.rs``.

    python3 -m venv /work/venv-pocket
    /work/venv-pocket/bin/pip install pocket-tts==4.0.1 transformers protobuf
    /work/venv-pocket/bin/python tools/bench/make_pocket_real_size.py /work/pocket-real

For each of ``english_2026-10`` (6 layers, the default) and ``english_2026-09_24l`` (24 layers),
the package's own config with every dimension as published, under ``OUT``:

* ``repo/languages/<model>/model.safetensors``: ``TTSModel.state_dict()`` of a model the package
  built from that config with its own (seeded) initialisation, so exactly the tensors and names
  ``TTSModel.load_model`` loads with ``strict=True`` (f32, about 470 MB for the 6-layer model);
* ``repo/languages/<model>/tokenizer.json``: a 4000-piece tokenizer (``n_bins`` = 4000), a
  SentencePiece unigram model trained here on pseudo-words and converted with ``transformers``'
  standard converter, as the fixture script does;
* ``repo/languages/<model>/embeddings/alba.safetensors``: a voice state the package computed from
  a synthetic 3 s prompt (``get_state_for_audio_prompt`` + ``export_model_state``);
* ``<model>.yaml``: the config with the files as ``hf://kyutai-bench/pocket-tts/...@main`` (what
  ``benches/pocket.rs`` reads), and ``<model>-local.yaml``: the same with absolute local paths,
  which both CLIs take (``pocket-tts generate --config``, ``kyutai say --tts-model``).

The random weights differ from the published ones in one way that matters for timing: the EOS
head's bias is set to -100, so that no run stops early and every run generates the reference's
``max_gen_len`` frames for its text (``ceil((tokens / 3 + 2) * 12.5)``), the same number on both
sides. Speed does not depend on the weights' values otherwise (no sparsity is exploited); the
SEANet convolutions are scaled as in the fixture script so that the waveform stays in range
(no denormals).
"""

from __future__ import annotations

import copy
import os
import random
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True
sys.path.insert(0, str(ROOT / "tools" / "parity" / "pocket"))

import make_reference as ref  # noqa: E402  (its helpers: random constants, voices, tokenizers)
import safetensors.torch  # noqa: E402
import sentencepiece as spm  # noqa: E402
from pocket_tts.models.model_state import export_model_state  # noqa: E402
from pocket_tts.models.tts_model import TTSModel  # noqa: E402
from pocket_tts.utils.config import load_config  # noqa: E402

HF_REPO = "kyutai-bench/pocket-tts"
MODELS = {"english_2026-10": 1006, "english_2026-09_24l": 924}
PACKAGE_CONFIGS = Path(ref.tts_mod.__file__).resolve().parents[1] / "config"


def pseudo_words(seed: int, lines: int) -> list[str]:
    rng = random.Random(seed)
    onsets = ["", "b", "br", "ch", "d", "f", "g", "gr", "j", "k", "l", "m", "n", "p", "pl",
              "qu", "r", "s", "st", "t", "tr", "v", "w", "th", "sh"]
    vowels = ["a", "e", "i", "o", "u", "ou", "ai", "ee", "oo", "ea", "au", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "ng", "nd", "ck"]
    vocab = ["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                     for _ in range(rng.randint(1, 3))) for _ in range(20000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    out = []
    for _ in range(lines):
        words = rng.choices(vocab, weights=weights, k=rng.randint(5, 15))
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    return out


def tokenizer_json(path: Path, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(pseudo_words(seed, 100_000)) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "spm"), vocab_size=4000,
            model_type="unigram", character_coverage=1.0, num_threads=os.cpu_count() or 2,
            minloglevel=2)
        proto = (Path(tmp) / "spm.model").read_bytes()
    tok = ref.spm_to_tokenizer_json(proto)
    assert tok.get_vocab_size() == 4000, tok.get_vocab_size()
    tok.save(str(path))


def configs(name: str, out: Path, folder: Path) -> tuple[Path, Path]:
    """Writes ``<name>.yaml`` (hf:// paths) and ``<name>-local.yaml`` (absolute paths)."""
    published = yaml.safe_load((PACKAGE_CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
    written = []
    for suffix, where in (("", f"hf://{HF_REPO}/languages/{name}/"), ("-local", f"{folder}/")):
        config = copy.deepcopy(published)
        config["weights_path"] = f"{where}model.safetensors" + ("@main" if suffix == "" else "")
        config["weights_path_without_voice_cloning"] = config["weights_path"]
        config["flow_lm"]["lookup_table"]["tokenizer_path"] = (
            f"{where}tokenizer.json" + ("@main" if suffix == "" else ""))
        path = out / f"{name}{suffix}.yaml"
        header = (f"# {name} as published, with random weights (tools/bench/"
                  "make_pocket_real_size.py); for speed measurements only.\n")
        path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")
        written.append(path)
    return written[0], written[1]


@torch.no_grad()
def build(name: str, seed: int, out: Path) -> None:
    folder = out / "repo" / "languages" / name
    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    tokenizer_json(folder / "tokenizer.json", seed)
    _, local = configs(name, out, folder)
    parsed = load_config(local)
    no_weights = parsed.model_copy(
        update={"weights_path": None, "weights_path_without_voice_cloning": None})
    torch.manual_seed(seed)
    model = TTSModel._from_pydantic_config_with_weights(no_weights, 0.3, 1, None, -4.0)
    ref.randomise_constants(model, seed + 1)
    model.flow_lm.out_eos.bias.fill_(-100.0)  # never stops early: max_gen_len frames
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, folder / "model.safetensors")
    size = (folder / "model.safetensors").stat().st_size
    print(f"{name}: {len(state)} tensors, {size / 1e6:.0f} MB")
    # The voice, computed by the package on the saved model, as `pocket-tts export-voice`.
    model = TTSModel.load_model(config=str(local))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "alba.wav"
        layout = [("silence", 0.1), ("speech", 1.4), ("silence", 0.2), ("speech", 1.2),
                  ("silence", 0.3)]
        ref.write_wav16(wav, ref.synth_speech(24000, layout, seed), 24000)
        voice = model.get_state_for_audio_prompt(wav, truncate=True)
        export_model_state(voice, folder / "embeddings" / "alba.safetensors")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/pocket-real").resolve()
    names = sys.argv[2:] or list(MODELS)
    for name in names:
        build(name, MODELS[name], out)


if __name__ == "__main__":
    main()
