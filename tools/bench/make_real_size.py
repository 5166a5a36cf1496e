#!/usr/bin/env python3
"""Build real-size random-weight Kyutai repositories, in the published layout, in a Hugging Face
cache, for the speed benchmarks (``tools/bench/run_cli_bench.sh``, ``python_reference.py``).

    python -m venv /work/venv-quant && /work/venv-quant/bin/pip install moshi==0.2.13 sentencepiece
    /work/venv-quant/bin/python tools/bench/make_real_size.py /work/bigmodels [stt|tts|all]

Under ``OUT/hub`` (an ``HF_HUB_CACHE``: ``blobs/<sha256>``, ``snapshots/<commit>/<file>``
symlinks, ``refs/main``), as Kyutai publishes them:

* ``kyutai/stt-1b-en_fr-candle``: ``config.json`` with the published dimensions (dim 2048,
  16 layers, 16 heads, ``hidden_scale`` 4.125, ``n_q`` 32, context 750, 4 extra heads of dim 6),
  ``model.safetensors`` (bf16, the stacked ``in_proj_weight`` layout the Rust ``moshi`` crate
  reads), ``mimi-pytorch-e351c8d8@125.safetensors`` (the standard Mimi, f32) and
  ``tokenizer_en_fr_audio_8000.model`` (a SentencePiece unigram model of 8000 pieces);
* ``kyutai/tts-1.6b-en_fr``: the published config (``dsm_tts_1e68beda@240.safetensors``, bf16
  with the conditioners in f32, stacked attention and per-step depformer weights),
  ``tokenizer-e351c8d8-checkpoint125.safetensors`` (Mimi, f32),
  ``tokenizer_spm_8k_en_fr_audio.model``;
* ``kyutai/tts-voices``: ``expresso/ex03-ex01_happy_001_channel1_334s.wav.1e68beda@240.safetensors``
  (``speaker_wavs`` f32 ``[1, 512, 125]``).

Also ``OUT/audio/speech_{4,8,16}s.wav``: voice-like test signals (24 kHz mono 16-bit).

Weights are the Python package's own random initialisation (``get_moshi_lm(None, ...)``, seeded),
saved the way the published files are: the per-step modules the current package builds
(``in_projs.N.weight``) are stacked back into ``in_proj_weight`` / ``out_proj.weight``. Mimi's
codebooks are filled with random centroids so that encoding picks varied codes. The tokenizer is
trained on generated pseudo-words; what it segments does not matter for speed, only its size.
"""

import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from moshi.models import loaders
from safetensors.torch import save_file

COMMIT = {  # fixed fake commits, so that reruns give the same snapshot paths
    "kyutai/stt-1b-en_fr-candle": "5b2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8",
    "kyutai/tts-1.6b-en_fr": "f65439609986c392cb12df63938abcc550c3fb15",
    "kyutai/tts-voices": "0123456789abcdef0123456789abcdef01234567",
}
VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"

STT_CONFIG = {
    "card": 2048, "n_q": 32, "dep_q": 0, "delays": [0] * 33, "dim": 2048, "text_card": 8000,
    "existing_text_padding_id": 3, "num_heads": 16, "num_layers": 16, "hidden_scale": 4.125,
    "causal": True, "layer_scale": None, "context": 750, "max_period": 100000.0,
    "gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope",
    "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 6,
    "depformer_dim_feedforward": 4224, "depformer_multi_linear": True,
    "depformer_pos_emb": "none", "depformer_weights_per_step": True, "conditioners": {},
    "cross_attention": False, "extra_heads_num_heads": 4, "extra_heads_dim": 6,
    "model_id": {"sig": "e351c8d8", "epoch": 125},
    "lm_gen_config": {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
    "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
    "model_type": "stt",
    "mimi_name": "mimi-pytorch-e351c8d8@125.safetensors",
    "tokenizer_name": "tokenizer_en_fr_audio_8000.model",
}

CFG_VALUES = [f"{1.0 + 0.5 * i:.1f}" for i in range(7)]
TTS_CONFIG = {
    "card": 2048, "n_q": 32, "dep_q": 32, "delays": [0, 0] + [2] * 31, "dim": 2048,
    "text_card": 8000, "existing_text_padding_id": 3, "num_heads": 16, "num_layers": 16,
    "hidden_scale": 4.125, "causal": True, "layer_scale": None, "context": 500,
    "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 1024, "depformer_num_heads": 16,
    "depformer_num_layers": 4, "depformer_dim_feedforward": 3072,
    "depformer_multi_linear": True, "depformer_pos_emb": "none",
    "depformer_weights_per_step": True, "depformer_low_rank_embeddings": 128,
    "demux_second_stream": True, "text_card_out": None, "cross_attention": True,
    "conditioners": {
        "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}},
        "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                       "possible_values": CFG_VALUES}},
        "control": {"type": "lut", "lut": {"dim": 2048, "n_bins": 1, "tokenizer": "noop",
                                           "possible_values": ["ok"]}},
    },
    "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1,
              "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
    "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
    "model_id": {"sig": "1e68beda", "epoch": 240},
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8,
    "model_type": "tts",
    "lm_gen_config": {"temp": 0.6, "text_temp": 0.6},
    "tokenizer_name": "tokenizer_spm_8k_en_fr_audio.model",
    "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
    "moshi_name": "dsm_tts_1e68beda@240.safetensors",
}

FILE_KEYS = ("mimi_name", "tokenizer_name", "moshi_name", "model_type", "lm_gen_config",
             "tts_config", "stt_config", "model_id", "mimi_config_name", "lora_name")


def lm_kwargs(config: dict) -> dict:
    """What `CheckpointInfo.from_hf_repo` hands to the LM constructor."""
    return {k: v for k, v in config.items() if k not in FILE_KEYS}


def stack_projections(state: dict) -> dict:
    """The published layout: the per-step attention projections that the current package builds
    (``in_projs.N.weight``, ``out_projs.N.weight``) stacked into ``in_proj_weight`` and
    ``out_proj.weight`` (LM and Mimi transformers alike)."""
    out = {}
    stacked: dict[str, list] = {}
    pattern = re.compile(r"^(.*)\.(in_projs|out_projs)\.(\d+)\.weight$")
    for name, tensor in state.items():
        m = pattern.match(name)
        if m:
            target = f"{m[1]}.in_proj_weight" if m[2] == "in_projs" else f"{m[1]}.out_proj.weight"
            stacked.setdefault(target, []).append((int(m[3]), tensor))
        else:
            out[name] = tensor
    for target, parts in stacked.items():
        out[target] = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])], dim=0)
    return out


def published_state(lm: torch.nn.Module) -> dict:
    """The LM's state dict in the published layout: bf16, conditioners in f32."""
    out = {}
    for name, tensor in stack_projections(lm.state_dict()).items():
        keep_f32 = name.startswith("condition_provider.") or name.startswith("fuser.")
        dtype = torch.float32 if keep_f32 else torch.bfloat16
        out[name] = tensor.detach().to(dtype).contiguous() if tensor.is_floating_point() else tensor
    return out


def random_lm(config: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    t = time.time()
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs(config), device="cpu",
                              dtype=torch.bfloat16)
    state = published_state(lm)
    params = sum(v.numel() for v in state.values())
    print(f"  LM: {len(state)} tensors, {params / 1e9:.2f}B parameters ({time.time() - t:.0f} s)")
    return state


def random_mimi(seed: int) -> dict:
    torch.manual_seed(seed)
    mimi = loaders.get_mimi(None, device="cpu", num_codebooks=32)
    state = {k: v.detach().float().contiguous()
             for k, v in stack_projections(mimi.state_dict()).items()}
    for name in state:
        if name.endswith("embedding_sum"):
            state[name] = torch.randn_like(state[name])
        if name.endswith("_initialized"):
            state[name] = torch.ones_like(state[name])
    print(f"  Mimi: {len(state)} tensors")
    return state


def pseudo_words(seed: int, lines: int) -> list[str]:
    rng = random.Random(seed)
    onsets = ["", "b", "br", "ch", "d", "f", "g", "gr", "j", "k", "l", "m", "n", "p", "pl",
              "qu", "r", "s", "st", "t", "tr", "v", "w", "z"]
    vowels = ["a", "e", "i", "o", "u", "ou", "ai", "é", "è", "ei", "au", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "x", "nt"]
    vocab = []
    for _ in range(40000):
        vocab.append("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                             for _ in range(rng.randint(1, 4))))
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    out = []
    for _ in range(lines):
        words = rng.choices(vocab, weights=weights, k=rng.randint(5, 15))
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    return out


def tokenizer(path: Path, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(pseudo_words(seed, 200_000)) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "spm"), vocab_size=8000,
            model_type="unigram", character_coverage=1.0, num_threads=os.cpu_count() or 2,
            input_sentence_size=200_000, shuffle_input_sentence=True, minloglevel=2)
        path.write_bytes((Path(tmp) / "spm.model").read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == 8000, sp.get_piece_size()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def git_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(hub: Path, repo: str, files: dict[str, Path]) -> None:
    """Moves `files` (repo path -> built file) into the cache layout of `repo`."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    commit = COMMIT[repo]
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for name, built in files.items():
        large = built.stat().st_size > 10_000_000 or name.endswith((".safetensors", ".model"))
        etag = sha256(built) if large else git_sha1(built)
        blob = folder / "blobs" / etag
        os.replace(built, blob)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
        print(f"  {repo}/{name}: {blob.stat().st_size:,} bytes")


def speech(path: Path, seconds: float, seed: int) -> None:
    """Harmonic bursts with pauses: a crude voiced signal, 24 kHz mono 16-bit."""
    rng = np.random.default_rng(seed)
    sr = 24000
    t = np.arange(int(seconds * sr)) / sr
    sig = np.zeros_like(t)
    start = 0.1
    while start < seconds - 0.3:
        length = rng.uniform(0.2, 0.5)
        f0 = rng.uniform(100, 220)
        m = (t >= start) & (t < start + length)
        env = np.sin(np.pi * (t[m] - start) / length) ** 2
        sig[m] += 0.3 * env * sum(np.sin(2 * np.pi * f0 * k * t[m]) / k for k in range(1, 8))
        start += length + rng.uniform(0.05, 0.3)
    pcm = np.clip(np.round(sig * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def build_stt(out: Path, work: Path) -> None:
    print("kyutai/stt-1b-en_fr-candle")
    files = {}
    files["config.json"] = work / "stt_config.json"
    files["config.json"].write_text(json.dumps(STT_CONFIG, indent=2))
    files["model.safetensors"] = work / "stt_lm.safetensors"
    save_file(random_lm(STT_CONFIG, 1), str(files["model.safetensors"]))
    files[STT_CONFIG["mimi_name"]] = work / "stt_mimi.safetensors"
    save_file(random_mimi(2), str(files[STT_CONFIG["mimi_name"]]))
    files[STT_CONFIG["tokenizer_name"]] = work / "stt_spm.model"
    tokenizer(files[STT_CONFIG["tokenizer_name"]], 3)
    publish(out / "hub", "kyutai/stt-1b-en_fr-candle", files)
    for seconds in (4, 8, 16):
        speech(out / "audio" / f"speech_{seconds}s.wav", seconds, seconds)


def build_tts(out: Path, work: Path) -> None:
    print("kyutai/tts-1.6b-en_fr")
    files = {}
    files["config.json"] = work / "tts_config.json"
    files["config.json"].write_text(json.dumps(TTS_CONFIG, indent=2))
    files[TTS_CONFIG["moshi_name"]] = work / "tts_lm.safetensors"
    save_file(random_lm(TTS_CONFIG, 4), str(files[TTS_CONFIG["moshi_name"]]))
    files[TTS_CONFIG["mimi_name"]] = work / "tts_mimi.safetensors"
    save_file(random_mimi(5), str(files[TTS_CONFIG["mimi_name"]]))
    files[TTS_CONFIG["tokenizer_name"]] = work / "tts_spm.model"
    tokenizer(files[TTS_CONFIG["tokenizer_name"]], 6)
    publish(out / "hub", "kyutai/tts-1.6b-en_fr", files)
    print("kyutai/tts-voices")
    torch.manual_seed(7)
    voice = work / "voice.safetensors"
    save_file({"speaker_wavs": torch.randn(1, 512, 125)}, str(voice),
              metadata={"sig": "1e68beda", "epoch": "240"})
    publish(out / "hub", "kyutai/tts-voices", {f"{VOICE}.1e68beda@240.safetensors": voice})


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/bigmodels")
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    torch.set_num_threads(os.cpu_count() or 2)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (out / "hub").mkdir(parents=True, exist_ok=True)
    if which in ("stt", "all"):
        build_stt(out, work)
    if which in ("tts", "all"):
        build_tts(out, work)


if __name__ == "__main__":
    main()
