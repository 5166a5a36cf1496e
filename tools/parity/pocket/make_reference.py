#!/usr/bin/env python3
"""Tiny random-weight Pocket TTS models and the reference outputs of ``pocket-tts`` 4.0.1 on them,
for the Rust parity tests of the Pocket TTS port.

How to run (from the repository root; CPU only, about a minute)::

    python3 -m venv /work/venv-pocket
    /work/venv-pocket/bin/pip install pocket-tts==4.0.1 transformers protobuf
    /work/venv-pocket/bin/python tools/parity/pocket/make_reference.py

(recorded with pocket-tts 4.0.1, torch 2.15.0, sentencepiece 0.2.3, tokenizers 0.23.3,
transformers 5.25.0; ``transformers`` and ``protobuf`` are only needed for the
SentencePiece -> tokenizer.json conversion.) Nothing is fetched from the Hugging Face Hub: the
script points the package's ``download_if_necessary`` at ``tests/fixtures/pocket/repo`` for
``hf://kyutai-test/pocket-tts/...`` paths and refuses every other remote path.

The other mode checks a voice state written by the Rust port with the package's own loader::

    /work/venv-pocket/bin/python tools/parity/pocket/make_reference.py \\
        --check-rust-voice FILE.safetensors [--model tiny] [--compare-with REF.safetensors]

It loads FILE with ``TTSModel.get_state_for_audio_prompt`` (the ``.safetensors`` branch, i.e.
``_import_model_state``), generates a few frames with it and exits 0 when that works (and, with
``--compare-with``, when every tensor matches REF within 1e-4).

What it writes (everything under ``tests/fixtures/pocket/``, see the README there):

* ``repo/languages/<model>/`` for the models ``tiny`` (mirrors ``english_2026-10``),
  ``tiny_small`` (mirrors ``english_2m_2026-10``: pointwise head, GQA with one KV head,
  ``attn_dim``, ``dim_feedforward``, ``z_dim``, low-rank lookup table, a separate decoder SEANet
  and transformer, SentencePiece ``.model``) and ``tiny_drifting`` (mirrors
  ``english_7m_2026-10``: drifting head, two KV heads): ``model.safetensors`` (the
  ``TTSModel.state_dict()``, i.e. exactly the key names ``TTSModel.load_model`` loads with
  ``strict=True`` from ``weights_path``), the tokenizer, and ``embeddings/<voice>.safetensors``
  voice states written by the package's ``export_model_state`` (after
  ``get_state_for_audio_prompt(wav, truncate=True)``, as ``pocket-tts export-voice`` does).
* ``<model>.yaml``: the config in the package's format.
* ``voice.wav``: a 16 kHz 16-bit mono synthetic "speech" prompt with a pause in the middle and
  trailing silence (resampling and ``end_on_pause`` are exercised).
* ``cases.json`` + ``cases/<case>.safetensors``: one generation per case, recorded with hooks.
* ``tokenizer_reference.json``, ``chunking_reference.json``.

The tokenizers: a SentencePiece unigram model trained here (``sentencepiece`` trainer, default
normalisation ``nmt_nfkc``, ``character_coverage=1.0``, one thread) on the corpus of
``corpus.py``: one model of 320 pieces, ``repo/languages/tiny_small/tokenizer.model``, which
``tiny_drifting.yaml`` points at too. ``tiny``'s ``tokenizer.json`` is converted from it with the standard
converter of ``transformers`` (``convert_slow_tokenizer.SpmConverter
.build_tokenizer_from_spm_proto(proto, [(piece, score), ...])``, the path
``PreTrainedTokenizerFast`` takes for a bare SentencePiece file: Unigram model, normaliser
``Precompiled`` + whitespace rules from the proto's normaliser spec, ``Metaspace`` pre-tokenizer
with ``prepend_scheme="always"``); the script asserts equal ids on the whole corpus, and
``tokenizer_reference.json`` flags the sample strings where the two differ (only control-piece
text such as a literal ``<s>``, which the Unigram model matches and SentencePiece never does).

Random weights: ``torch.manual_seed`` before the model is built (the package's own
initialisation), then the parameters the package initialises to constants are randomised
(``speaker_proj_weight`` is zeros, LayerNorm/RMSNorm weights ones, biases zeros, LayerScale 0.01,
``emb_std`` ones, ``emb_mean`` zeros), and the SEANet convolutions are scaled so the waveform
keeps a useful amplitude. The model is then saved and loaded back through
``TTSModel.load_model(config=<model>.yaml)`` so every case runs on the published layout.

Recording (see ``cases.json``'s ``notes``): ``FlowLMModel.forward`` is wrapped (one record per
call: the text-prompt pass, the voice-prompt pass, every autoregressive step), a forward hook on
``flow_lm.out_eos`` takes the raw EOS logit and its input (the backbone output), and
``torch.nn.init.normal_`` / ``trunc_normal_`` are wrapped to copy every noise tensor drawn inside
a forward call. The Mimi decoder is run frame by frame (``max_decoder_frames_per_call = 1``) so
the waveform does not depend on thread timing.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import sys
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import safetensors.torch  # noqa: E402
import sentencepiece as spm  # noqa: E402
import tokenizers  # noqa: E402
import yaml  # noqa: E402

import pocket_tts.models.tts_model as tts_mod  # noqa: E402
import pocket_tts.modules.text_conditioner as tc_mod  # noqa: E402
import pocket_tts.utils.config as config_mod  # noqa: E402
import pocket_tts.utils.utils as utils_mod  # noqa: E402
from pocket_tts.data.audio import audio_read  # noqa: E402
from pocket_tts.data.audio_utils import convert_audio, end_on_pause  # noqa: E402
from pocket_tts.models.flow_lm import FlowLMModel  # noqa: E402
from pocket_tts.models.model_state import export_model_state  # noqa: E402
from pocket_tts.models.text_chunking import (  # noqa: E402
    prepare_text_prompt,
    split_into_best_sentences,
)
from pocket_tts.models.tts_model import TTSModel  # noqa: E402
from pocket_tts.modules.layer_scale import LayerScale  # noqa: E402
from pocket_tts.modules.mlp import LayerNorm as MlpLayerNorm  # noqa: E402
from pocket_tts.modules.mlp import RMSNorm  # noqa: E402
from pocket_tts.modules.conv import StreamingConv1d, StreamingConvTranspose1d  # noqa: E402
from pocket_tts.utils.config import load_config  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ next to corpus.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus_lines  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "pocket"
REPO = OUT / "repo"
HF_REPO = "kyutai-test/pocket-tts"
HF_PREFIX = f"hf://{HF_REPO}/"
FRAME = 1920  # samples per latent frame at 24 kHz (12.5 Hz)


# --------------------------------------------------------------------------------------------
# Offline "hub": hf://kyutai-test/pocket-tts/<path>@<rev> -> tests/fixtures/pocket/repo/<path>
# --------------------------------------------------------------------------------------------


def local_download(file_path) -> Path:
    text = str(file_path)
    if text.startswith(HF_PREFIX):
        rel = text[len(HF_PREFIX) :].split("@")[0]
        return REPO / rel
    if text.startswith(("hf://", "http://", "https://")):
        raise RuntimeError(f"no network here, refusing to fetch {text}")
    return Path(text)


for _module in (utils_mod, config_mod, tts_mod, tc_mod):
    _module.download_if_necessary = local_download


def hf_path(model: str, name: str) -> str:
    return f"{HF_PREFIX}languages/{model}/{name}@main"


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

VOCAB = 320  # one SentencePiece model for all three: n_bins = 320


def tiny_config() -> dict:
    """english_2026-10, shrunk: LSD head, full lookup table, MHA, tokenizer.json."""
    weights = hf_path("tiny", "model.safetensors")
    return {
        "weights_path": weights,
        "weights_path_without_voice_cloning": weights,
        "default_temperature": 0.3,
        "replace_characters": {"\u2019": "'", "\u2018": "'"},
        "flow_lm": {
            "insert_bos_before_voice": True,
            "dtype": "float32",
            "flow": {"depth": 2, "dim": 16},
            "transformer": {
                "d_model": 32,
                "hidden_scale": 4,
                "max_period": 10000,
                "num_heads": 2,
                "num_layers": 2,
            },
            "lookup_table": {
                "dim": 32,
                "n_bins": VOCAB,
                "tokenizer": "tokenizers",
                "tokenizer_path": hf_path("tiny", "tokenizer.json"),
            },
        },
        "mimi": {
            "dtype": "float32",
            "sample_rate": 24000,
            "inner_dim": 32,
            "outer_dim": 16,
            "channels": 1,
            "frame_rate": 12.5,
            "seanet": {
                "dimension": 16,
                "channels": 1,
                "n_filters": 4,
                "n_residual_layers": 1,
                "ratios": [6, 5, 4],
                "kernel_size": 7,
                "residual_kernel_size": 3,
                "last_kernel_size": 3,
                "dilation_base": 2,
                "pad_mode": "constant",
                "compress": 2,
            },
            "transformer": {
                "d_model": 16,
                "num_heads": 2,
                "num_layers": 2,
                "layer_scale": 0.01,
                "context": 250,
                "dim_feedforward": 32,
                "input_dimension": 16,
                "output_dimensions": [16],
            },
            "quantizer": {"dimension": 32, "output_dimension": 16},
        },
    }


def _small_mimi(decoder_filters: int, decoder_layers: int) -> dict:
    return {
        "dtype": "float32",
        "sample_rate": 24000,
        "inner_dim": 32,
        "outer_dim": 12,
        "channels": 1,
        "frame_rate": 12.5,
        "seanet": {
            "dimension": 16,
            "channels": 1,
            "n_filters": 4,
            "n_residual_layers": 1,
            "ratios": [6, 5, 4],
            "kernel_size": 7,
            "residual_kernel_size": 3,
            "last_kernel_size": 3,
            "dilation_base": 2,
            "pad_mode": "constant",
            "compress": 2,
        },
        "transformer": {
            "d_model": 16,
            "num_heads": 2,
            "num_layers": 2,
            "layer_scale": 0.01,
            "context": 250,
            "dim_feedforward": 32,
            "input_dimension": 16,
            "output_dimensions": [16],
        },
        "quantizer": {"dimension": 32, "output_dimension": 12},
        "decoder_seanet": {
            "dimension": 12,
            "channels": 1,
            "n_filters": decoder_filters,
            "n_residual_layers": 1,
            "ratios": [6, 5, 4],
            "kernel_size": 3,
            "residual_kernel_size": 3,
            "last_kernel_size": 3,
            "dilation_base": 2,
            "pad_mode": "constant",
            "compress": 2,
        },
        "decoder_transformer": {
            "d_model": 12,
            "num_heads": 2,
            "num_layers": decoder_layers,
            "layer_scale": 0.01,
            "context": 50,
            "dim_feedforward": 24,
            "input_dimension": 12,
            "output_dimensions": [12],
        },
    }


def tiny_small_config() -> dict:
    """english_2m_2026-10, shrunk: pointwise head, attn_dim, one KV head, dim_feedforward,
    z_dim, low-rank lookup table, decoder_seanet/decoder_transformer, SentencePiece .model."""
    weights = hf_path("tiny_small", "model.safetensors")
    return {
        "weights_path": weights,
        "weights_path_without_voice_cloning": weights,
        "default_temperature": 0.3,
        "replace_characters": {"\u2013": ",", "\u2014": ",", "\u2019": "'", "\u2018": "'"},
        "flow_lm": {
            "insert_bos_before_voice": True,
            "dtype": "float32",
            "flow": {"depth": 2, "dim": 16, "type": "pointwise"},
            "transformer": {
                "d_model": 24,
                "hidden_scale": 1,
                "max_period": 10000,
                "num_heads": 3,
                "num_layers": 2,
                "dim_feedforward": 20,
                "attn_dim": 48,
                "num_kv_heads": 1,
            },
            "lookup_table": {
                "dim": 24,
                "n_bins": VOCAB,
                "tokenizer": "sentencepiece",
                "tokenizer_path": hf_path("tiny_small", "tokenizer.model"),
                "rank": 8,
            },
            "z_dim": 16,
        },
        "mimi": _small_mimi(decoder_filters=3, decoder_layers=2),
        "default_eos_threshold": -1.0,
    }


def tiny_drifting_config() -> dict:
    """english_7m_2026-10, shrunk: drifting head, attn_dim, two KV heads (GQA groups of 2),
    FFN width d_model * hidden_scale, z_dim, low-rank lookup table, SentencePiece .model."""
    weights = hf_path("tiny_drifting", "model.safetensors")
    return {
        "weights_path": weights,
        "weights_path_without_voice_cloning": weights,
        "default_temperature": 0.3,
        "replace_characters": {"\u2013": ",", "\u2014": ",", "\u2019": "'", "\u2018": "'"},
        "flow_lm": {
            "insert_bos_before_voice": True,
            "dtype": "float32",
            "flow": {"depth": 2, "dim": 16, "type": "drifting"},
            "transformer": {
                "d_model": 24,
                "hidden_scale": 1,
                "max_period": 10000,
                "num_heads": 4,
                "num_layers": 2,
                "attn_dim": 32,
                "num_kv_heads": 2,
            },
            "lookup_table": {
                "dim": 24,
                "n_bins": VOCAB,
                "tokenizer": "sentencepiece",
                # Another directory's file, as english_2026-10 uses english_2026-09's tokenizer.
                "tokenizer_path": hf_path("tiny_small", "tokenizer.model"),
                "rank": 8,
            },
            "z_dim": 16,
        },
        "mimi": _small_mimi(decoder_filters=4, decoder_layers=2),
        "default_eos_threshold": -1.0,
    }


MODELS = {
    "tiny": (tiny_config, "mirrors english_2026-10", 1000),
    "tiny_small": (tiny_small_config, "mirrors english_2m_2026-10", 2000),
    "tiny_drifting": (tiny_drifting_config, "mirrors english_7m_2026-10", 3000),
}


def write_yaml(name: str, config: dict, what: str):
    header = (
        f"# Tiny random-weight Pocket TTS model for the Rust parity tests ({what}).\n"
        f"# Written by tools/parity/pocket/make_reference.py; the weights are random.\n\n"
    )
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    (OUT / f"{name}.yaml").write_text(header + text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def train_spm(vocab_size: int) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def spm_to_tokenizer_json(model_proto: bytes) -> tokenizers.Tokenizer:
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    pb2 = import_protobuf()
    proto = pb2.ModelProto()
    proto.ParseFromString(model_proto)
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    return SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)


def build_tokenizers() -> dict:
    proto = train_spm(VOCAB)
    tok = spm_to_tokenizer_json(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    assert sp.vocab_size() == VOCAB and tok.get_vocab_size() == VOCAB
    for line in corpus_lines():
        assert sp.encode(line) == tok.encode(line).ids, line
    for d in ("tiny", "tiny_small", "tiny_drifting"):
        (REPO / "languages" / d).mkdir(parents=True, exist_ok=True)
    tok.save(str(REPO / "languages" / "tiny" / "tokenizer.json"))
    (REPO / "languages" / "tiny_small" / "tokenizer.model").write_bytes(proto)
    return {"proto": proto}


# --------------------------------------------------------------------------------------------
# Synthetic speech-like audio
# --------------------------------------------------------------------------------------------


def synth_speech(sample_rate: int, layout: list[tuple[str, float]], seed: int) -> np.ndarray:
    """Harmonic "vowels" with a moving pitch and formants, a syllable envelope, a little noise;
    ``layout`` is a list of ("speech" | "silence", seconds)."""
    rng = np.random.RandomState(seed)
    parts = []
    for kind, seconds in layout:
        n = int(round(seconds * sample_rate))
        t = np.arange(n) / sample_rate
        if kind == "silence":
            parts.append(rng.randn(n) * 1e-4)
            continue
        f0 = 120 + 40 * rng.rand() + 25 * np.sin(2 * np.pi * (0.7 + 0.5 * rng.rand()) * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        f1 = 500 + 250 * np.sin(2 * np.pi * 2.1 * t + rng.rand() * 6)
        f2 = 1500 + 500 * np.sin(2 * np.pi * 1.3 * t + rng.rand() * 6)
        sig = np.zeros(n)
        for k in range(1, 30):
            fk = k * f0
            amp = np.exp(-(((fk - f1) / 180) ** 2)) + 0.5 * np.exp(-(((fk - f2) / 250) ** 2))
            amp = amp * (fk < sample_rate / 2 - 200)
            sig += amp * np.sin(k * phase) / k**0.3
        rate = 3.5 + rng.rand()
        env = np.abs(np.sin(np.pi * rate * t)) ** 0.7
        noise = rng.randn(n) * 0.05 * (np.sin(np.pi * rate * t + 1.0) > 0.8)
        seg = env * sig + noise
        fade = min(n, int(0.01 * sample_rate))
        seg[:fade] *= np.linspace(0, 1, fade)
        seg[n - fade :] *= np.linspace(1, 0, fade)
        parts.append(seg)
    audio = np.concatenate(parts)
    return (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)


def write_wav16(path: Path, audio: np.ndarray, sample_rate: int):
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


VOICE_WAV_RATE = 16000
VOICE_WAV_LAYOUT = [
    ("silence", 0.05),
    ("speech", 0.6),
    ("silence", 0.25),
    ("speech", 0.45),
    ("silence", 0.3),
]
PREDEFINED_VOICES = {
    # name: (sample rate of the source wav, layout, seed)
    "alba": (24000, [("silence", 0.1), ("speech", 1.6), ("silence", 0.4)], 11),
    "jean": (24000, [("speech", 1.2), ("silence", 0.2), ("speech", 0.5), ("silence", 0.3)], 12),
}


# --------------------------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def randomise_constants(model: TTSModel, seed: int):
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g)

    fl = model.flow_lm
    w = fl.speaker_proj_weight
    w.copy_(randn(w.shape) / math.sqrt(w.shape[1]))
    fl.emb_std.copy_(0.5 + torch.rand(fl.emb_std.shape, generator=g))
    fl.emb_mean.copy_(0.2 * randn(fl.emb_mean.shape))
    for top in (model.flow_lm, model.mimi):
        for module in top.modules():
            if isinstance(module, (torch.nn.LayerNorm, MlpLayerNorm)) and hasattr(module, "weight"):
                if module.weight is not None:
                    module.weight.copy_(1 + 0.2 * randn(module.weight.shape))
                    module.bias.copy_(0.1 * randn(module.bias.shape))
            elif isinstance(module, RMSNorm):
                module.alpha.copy_(1 + 0.2 * randn(module.alpha.shape))
            elif isinstance(module, LayerScale):
                # 0.01 in the config; larger here so Mimi's transformer matters in the tests.
                module.scale.copy_(0.1 * (1 + 0.3 * randn(module.scale.shape)))
    # ... and the conv biases smaller, or their constant path dominates the waveform.
    # The random EOS head's logit barely moves from step to step; scale it so that thresholds
    # can sit far (>= 0.01) from every logit that decides when a chunk ends.
    fl.out_eos.weight.mul_(25.0)
    # Kaiming-uniform convolutions shrink the signal about 3x in variance per layer; the SEANet
    # stacks ~10 of them. Scale them up so the waveform stays O(0.1) rather than O(1e-4).
    for module in model.mimi.modules():
        conv = None
        if isinstance(module, StreamingConv1d):
            conv = module.conv
        elif isinstance(module, StreamingConvTranspose1d):
            conv = module.convtr
        if conv is not None:
            conv.weight.mul_(1.8)
            if conv.bias is not None:
                conv.bias.mul_(0.1)


def build_random_model(name: str):
    make_config, what, seed = MODELS[name]
    config = make_config()
    write_yaml(name, config, what)
    parsed = load_config(OUT / f"{name}.yaml")
    no_weights = parsed.model_copy(
        update={"weights_path": None, "weights_path_without_voice_cloning": None}
    )
    torch.manual_seed(seed)
    model = TTSModel._from_pydantic_config_with_weights(no_weights, 0.0, 1, None, -4.0)
    randomise_constants(model, seed + 1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, REPO / "languages" / name / "model.safetensors")


def load(name: str) -> TTSModel:
    model = TTSModel.load_model(config=str(OUT / f"{name}.yaml"))
    model.max_decoder_frames_per_call = 1
    return model


# --------------------------------------------------------------------------------------------
# Recording hooks
# --------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = False
        self.calls: list[dict] = []
        self.current: dict | None = None
        self.phase: tuple = ("none",)
        self.chunks: list[dict] = []
        self.encode: dict = {}

    def reset(self):
        self.calls, self.chunks, self.encode = [], [], {}
        self.phase = ("none",)
        self.active = True


REC = Recorder()
_orig_forward = FlowLMModel.forward
_orig_normal = torch.nn.init.normal_
_orig_trunc_normal = torch.nn.init.trunc_normal_


def _rec_forward(self, sequence, text_embeddings, model_state, sampler_decode_steps, temp,
                 noise_clamp, eos_threshold):
    if not REC.active:
        return _orig_forward(self, sequence, text_embeddings, model_state, sampler_decode_steps,
                             temp, noise_clamp, eos_threshold)
    offset = None
    for st in model_state.values():
        if "offset" in st:
            offset = int(st["offset"].view(-1)[0])
            break
    rec = {
        "phase": REC.phase,
        "seq_len": int(sequence.shape[1]),
        "cond_len": int(text_embeddings.shape[1]),
        "offset_before": offset,
        "noise": None,
    }
    REC.current = rec
    out, is_eos = _orig_forward(self, sequence, text_embeddings, model_state,
                                sampler_decode_steps, temp, noise_clamp, eos_threshold)
    REC.current = None
    rec["latent"] = out.reshape(-1).clone()
    rec["is_eos"] = bool(is_eos.item())
    REC.calls.append(rec)
    return out, is_eos


REPLAY_NOISE: list[torch.Tensor] | None = None


def _rec_noise(orig):
    def wrapper(tensor, *args, **kwargs):
        result = orig(tensor, *args, **kwargs)
        if REC.active and REC.current is not None and REPLAY_NOISE is not None:
            tensor.copy_(REPLAY_NOISE.pop(0).view(tensor.shape))
        if REC.active and REC.current is not None:
            assert REC.current["noise"] is None, "two noise draws in one forward"
            REC.current["noise"] = tensor.detach().reshape(-1).clone()
        return result

    return wrapper


def _eos_hook(module, inputs, output):
    if REC.active and REC.current is not None:
        REC.current["hidden"] = inputs[0].detach().reshape(-1).clone()
        REC.current["eos_logit"] = float(output.reshape(-1)[0])


FlowLMModel.forward = _rec_forward
torch.nn.init.normal_ = _rec_noise(_orig_normal)
torch.nn.init.trunc_normal_ = _rec_noise(_orig_trunc_normal)

_orig_short = TTSModel._generate_audio_stream_short_text


def _rec_short(self, model_state, text_to_generate, frames_after_eos, copy_state, stop):
    if REC.active:
        prepared = self.flow_lm.conditioner.prepare(text_to_generate)
        REC.chunks.append(
            {
                "prepared_text": text_to_generate,
                "token_ids": prepared[0].tolist(),
                "frames_after_eos": int(frames_after_eos),
                "max_gen_len": self._estimate_max_gen_len(prepared.shape[1]),
            }
        )
        REC.phase = ("chunk", len(REC.chunks) - 1)
    yield from _orig_short(self, model_state, text_to_generate, frames_after_eos, copy_state,
                           stop)


TTSModel._generate_audio_stream_short_text = _rec_short

_orig_encode_audio = TTSModel._encode_audio


def _rec_encode_audio(self, audio):
    out = _orig_encode_audio(self, audio)
    if REC.active:
        REC.encode["audio_prompt"] = audio.reshape(-1).clone()
        REC.encode["latents"] = self.mimi.encode_to_latent(audio)[0].clone()
        REC.encode["speaker_conditioning"] = out[0].clone()
    return out


TTSModel._encode_audio = _rec_encode_audio


def install_eos_hooks(model: TTSModel):
    model.flow_lm.out_eos.register_forward_hook(_eos_hook)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

LONG_TEXT = (
    "The old keeper climbed the stairs at 7.45 every evening, carrying a lamp and a book. "
    "Nobody remembered when he had arrived; some said 1987, others said he had always been "
    "there, like the rocks. "
    "He didn't mind."
)

CASES = [
    # name, model, text, voice, settings
    dict(name="short", model="tiny", text="Hello world, how are you?",
         voice=("predefined", "alba"), temp=0.0, eos="search", window=(7, 12)),
    dict(name="long", model="tiny", text=LONG_TEXT, voice=("predefined", "alba"), temp=0.0,
         eos="search", window=(6, 14), frames_after_eos=2),
    dict(name="voice_state", model="tiny", text="Bonjour à tous, ça va très bien.",
         voice=("file", "repo/languages/tiny/embeddings/jean.safetensors"), temp=0.0,
         eos="search", window=(7, 12)),
    dict(name="legacy_voice", model="tiny", text="The train leaves at nine.",
         voice=("legacy_file", "voices/jean_legacy.safetensors"), temp=0.0, eos="search",
         window=(7, 12)),
    dict(name="cloned", model="tiny", text="Can you hear the birds singing?",
         voice=("cloned", "voice.wav"), temp=0.0, eos="search", window=(7, 12),
         audio_tensors=True),
    dict(name="small", model="tiny_small", text="What a beautiful morning it is!",
         voice=("predefined", "alba"), temp=0.0, eos="search", window=(7, 12)),
    dict(name="drifting", model="tiny_drifting", text="Ich hoffe, ich gefalle dir.",
         voice=("predefined", "alba"), temp=0.0, eos="search", window=(7, 12)),
    dict(name="temp", model="tiny", text="It's 3.5 degrees outside.",
         voice=("cloned", "voice.wav"), temp=0.7, eos="search", window=(7, 12), seed=7),
    dict(name="temp_clamp", model="tiny", text="Where is the station?",
         voice=("predefined", "alba"), temp=0.7, noise_clamp=0.5, eos="search", window=(7, 12),
         seed=8),
    dict(name="lsd_steps", model="tiny", text="A.", voice=("predefined", "alba"), temp=0.0,
         lsd_steps=4, eos="never"),
]
NEVER_EOS = 100.0


def pick_threshold(step_logits: list[list[float]], window: tuple[int, int]) -> float:
    """A threshold between two recorded logits, far from every logit that decides an outcome,
    such that every chunk's EOS fires within [6, window[1]] and chunk 0's at >= window[0]."""
    first = TTSModel._MIN_FRAMES_BEFORE_EOS
    for lo in (window[0], first):
        thr = _pick_threshold(step_logits, lo, window[1], first)
        if thr is not None:
            return thr
    raise RuntimeError(f"no threshold with a margin in {window}: {step_logits}")


def _pick_threshold(step_logits, lo, hi, first):
    values = sorted({v for logits in step_logits for v in logits[first : hi + 1]})
    best, best_margin = None, -1.0
    for a, b in zip(values, values[1:]):
        thr = (a + b) / 2
        fires = []
        for logits in step_logits:
            fire = next((g for g in range(first, len(logits)) if logits[g] > thr), None)
            fires.append(fire)
        if any(f is None or f > hi for f in fires) or fires[0] < lo:
            continue
        margin = min(
            abs(logits[g] - thr)
            for logits, f in zip(step_logits, fires)
            for g in range(first, f + 1)
        )
        if margin > best_margin:
            best, best_margin = thr, margin
    if best is None or best_margin < 0.01:
        return None
    return round(best, 4)


def get_voice_state(model: TTSModel, voice: tuple, model_name: str):
    kind, what = voice
    if kind == "predefined":
        return model.get_state_for_audio_prompt(
            REPO / "languages" / model_name / "embeddings" / f"{what}.safetensors"
        )
    if kind in ("file", "legacy_file"):
        return model.get_state_for_audio_prompt(OUT / what)
    assert kind == "cloned"
    REC.phase = ("voice",)
    state = model.get_state_for_audio_prompt(OUT / what)
    REC.phase = ("none",)
    return state


def run_case(models: dict, case: dict, eos_threshold: float) -> dict:
    model = models[case["model"]]
    model.temp = case["temp"]
    model.noise_clamp = case.get("noise_clamp")
    model.sampler_decode_steps = case.get("lsd_steps", 1)
    model.eos_threshold = eos_threshold
    REC.reset()
    torch.manual_seed(case.get("seed", 0))
    state = get_voice_state(model, case["voice"], case["model"])
    pcm = model.generate_audio(
        state,
        case["text"],
        max_tokens=case.get("max_tokens", 50),
        frames_after_eos=case.get("frames_after_eos"),
    )
    REC.active = False
    return {"pcm": pcm.clone(), "calls": list(REC.calls), "chunks": list(REC.chunks),
            "encode": dict(REC.encode), "state": state}


@torch.no_grad()
def check_pcm(model: TTSModel, tensors: dict, chunks_meta: list):
    """The waveform is the recorded latents decoded as documented: latents * emb_std +
    emb_mean, a fresh Mimi state per chunk, one frame per call, the 5 ms fade-in."""
    from pocket_tts.modules.stateful_module import increment_steps, init_states

    for meta in chunks_meta:
        c = meta["index"]
        latents = tensors[f"latents.{c}"]
        mimi_state = init_states(model.mimi, batch_size=1, sequence_length=meta["max_gen_len"] * 16)
        out = []
        for t in range(latents.shape[0]):
            x = latents[None, t : t + 1] * model.flow_lm.emb_std + model.flow_lm.emb_mean
            out.append(model.mimi.decode_from_latent(x, mimi_state).reshape(-1))
            increment_steps(model.mimi, mimi_state, increment=16)
        audio = torch.cat(out)
        fade = torch.linspace(0, 1, model.config.mimi.sample_rate // 200)
        audio[: fade.numel()] *= fade
        start = meta["pcm_start"]
        expect = tensors["pcm"][start : start + meta["samples"]]
        assert torch.equal(audio, expect), float((audio - expect).abs().max())


def check_replay(models: dict, case: dict, thr: float, tensors: dict):
    """Replaying the recorded noise, in call order, under another torch seed gives the same
    waveform: the noise is all the randomness there is."""
    global REPLAY_NOISE
    REPLAY_NOISE = list(tensors["noise.all"])
    replay = run_case(models, dict(case, seed=case.get("seed", 0) + 1000), thr)
    assert not REPLAY_NOISE, len(REPLAY_NOISE)
    REPLAY_NOISE = None
    assert torch.equal(replay["pcm"], tensors["pcm"]), "noise replay differs"


def voice_description(case: dict) -> dict:
    kind, what = case["voice"]
    if kind == "predefined":
        return {"kind": "predefined", "name": what,
                "file": f"repo/languages/{case['model']}/embeddings/{what}.safetensors",
                "hf": hf_path(case["model"], f"embeddings/{what}.safetensors")}
    if kind == "file":
        return {"kind": "file", "file": what}
    if kind == "legacy_file":
        return {"kind": "file", "file": what, "legacy": True,
                "note": "legacy layout: /cache and /current_end (offset = current_end.shape[0]),"
                        " no /offset, no /pad"}
    return {"kind": "cloned", "wav": what, "wav_sample_rate": VOICE_WAV_RATE, "truncate": False}


def record_case(models: dict, case: dict) -> tuple[dict, dict]:
    model = models[case["model"]]
    if case["eos"] == "never":
        thr = NEVER_EOS
    else:
        probe = run_case(models, case, NEVER_EOS)
        per_chunk = []
        for ci in range(len(probe["chunks"])):
            steps = [c for c in probe["calls"] if c["phase"] == ("chunk", ci) and c["seq_len"] == 1]
            per_chunk.append([c["eos_logit"] for c in steps])
        thr = pick_threshold(per_chunk, case["window"])
    result = run_case(models, case, thr)

    tensors: dict[str, torch.Tensor] = {}
    chunks_meta = []
    all_noise = []
    noise_calls = []
    total_samples = 0
    for ci, chunk in enumerate(result["chunks"]):
        calls = [c for c in result["calls"] if c["phase"] == ("chunk", ci)]
        text_pass, steps = calls[0], calls[1:]
        assert text_pass["seq_len"] == 0 and all(c["seq_len"] == 1 for c in steps)
        logits = [c["eos_logit"] for c in steps]
        first = TTSModel._MIN_FRAMES_BEFORE_EOS
        eos_step = next((g for g, v in enumerate(logits) if g >= first and v > thr), None)
        fae = chunk["frames_after_eos"]
        if eos_step is None:
            frames = len(steps)
            assert frames == chunk["max_gen_len"]
            end = "max_gen_len"
        else:
            frames = eos_step + fae
            assert len(steps) == frames + 1, (len(steps), frames)
            end = "eos"
        margin = min(abs(v - thr) for v in logits[first : (eos_step or len(logits) - 1) + 1])
        tensors[f"latents.{ci}"] = torch.stack([c["latent"] for c in steps[:frames]])
        tensors[f"eos_logits.{ci}"] = torch.tensor(logits, dtype=torch.float32)
        tensors[f"hidden.{ci}"] = torch.stack([c["hidden"] for c in steps])
        tensors[f"text_pass.hidden.{ci}"] = text_pass["hidden"]
        tensors[f"text_pass.latent.{ci}"] = text_pass["latent"]
        tensors[f"text_pass.eos_logit.{ci}"] = torch.tensor([text_pass["eos_logit"]])
        if case["temp"] > 0:
            tensors[f"noise.{ci}"] = torch.stack([c["noise"] for c in calls])
        chunks_meta.append(
            {
                "index": ci,
                "prepared_text": chunk["prepared_text"],
                "token_ids": chunk["token_ids"],
                "n_tokens": len(chunk["token_ids"]),
                "offset_before_text_pass": text_pass["offset_before"],
                "max_gen_len": chunk["max_gen_len"],
                "frames_after_eos": fae,
                "eos_step": eos_step,
                "end": end,
                "frames": frames,
                "flow_lm_steps": len(steps),
                "samples": frames * FRAME,
                "pcm_start": total_samples,
                "min_abs_logit_minus_threshold": round(margin, 5),
            }
        )
        total_samples += frames * FRAME
    assert total_samples == result["pcm"].shape[0], (total_samples, result["pcm"].shape)
    tensors["pcm"] = result["pcm"].float()
    check_pcm(model, tensors, chunks_meta)

    if case["temp"] > 0:
        for i, c in enumerate(result["calls"]):
            all_noise.append(c["noise"])
            if c["phase"] == ("voice",):
                desc = {"call": i, "pass": "voice_prompt", "row_in": "noise.voice", "row": 0}
            else:
                ci = c["phase"][1]
                ccalls = [x for x in result["calls"] if x["phase"] == ("chunk", ci)]
                row = next(j for j, x in enumerate(ccalls) if x is c)
                desc = {"call": i, "pass": "text_prompt" if row == 0 else "step", "chunk": ci,
                        "step": None if row == 0 else row - 1, "row_in": f"noise.{ci}",
                        "row": row}
            noise_calls.append(desc)
        tensors["noise.all"] = torch.stack(all_noise)
        check_replay(models, case, thr, tensors)

    voice_meta = voice_description(case)
    if case["voice"][0] == "cloned":
        voice_calls = [c for c in result["calls"] if c["phase"] == ("voice",)]
        assert len(voice_calls) == 1 and voice_calls[0]["seq_len"] == 0
        vc = voice_calls[0]
        enc = result["encode"]
        audio, sr = audio_read(OUT / case["voice"][1])
        audio_24k = convert_audio(audio, sr, model.config.mimi.sample_rate, 1)
        after_pause = end_on_pause(audio_24k, model.config.mimi.sample_rate)
        assert torch.equal(after_pause.reshape(-1), enc["audio_prompt"])
        if case.get("audio_tensors", False):
            tensors["voice.audio_24k"] = audio_24k.reshape(-1).float()
            tensors["voice.audio_prompt"] = enc["audio_prompt"]
        tensors["voice.latents"] = enc["latents"]
        tensors["voice.speaker_conditioning"] = enc["speaker_conditioning"]
        tensors["voice.prompt"] = torch.cat(
            [model.flow_lm.bos_before_voice[0].detach(), enc["speaker_conditioning"]], dim=0
        )
        tensors["voice.hidden"] = vc["hidden"]
        tensors["voice.latent"] = vc["latent"]
        tensors["voice.eos_logit"] = torch.tensor([vc["eos_logit"]])
        if case["temp"] > 0:
            tensors["noise.voice"] = vc["noise"][None]
        state_file = OUT / "cases" / f"{case['name']}.voice_state.safetensors"
        export_model_state(result["state"], state_file)
        voice_meta.update(
            {
                "wav_samples": int(audio.shape[-1]),
                "audio_24k_samples": int(audio_24k.shape[-1]),
                "audio_prompt_samples": int(enc["audio_prompt"].shape[0]),
                "voice_frames": int(enc["latents"].shape[0]),
                "prompt_len": int(enc["latents"].shape[0]) + 1,
                "state_file": f"cases/{case['name']}.voice_state.safetensors",
            }
        )

    meta = {
        "name": case["name"],
        "model": case["model"],
        "config": f"{case['model']}.yaml",
        "text": case["text"],
        "voice": voice_meta,
        "temperature": case["temp"],
        "eos_threshold": thr,
        "eos_threshold_choice": (
            "never fires" if case["eos"] == "never"
            else f"picked between recorded logits, EOS inside steps {list(case['window'])}"
        ),
        "frames_after_eos_argument": case.get("frames_after_eos"),
        "sampler_decode_steps": case.get("lsd_steps", 1),
        "noise_clamp": case.get("noise_clamp"),
        "max_tokens": case.get("max_tokens", 50),
        "torch_seed": case.get("seed", 0),
        "sample_rate": model.config.mimi.sample_rate,
        "split_chunks": split_into_best_sentences(
            model.flow_lm.conditioner.tokenizer,
            case["text"],
            case.get("max_tokens", 50),
            model.pad_with_spaces_for_short_inputs,
            remove_semicolons=model.remove_semicolons,
            append_terminal_punctuation=model.append_terminal_punctuation,
            capitalize_first_letter=model.capitalize_first_letter,
            replace_characters=model.replace_characters,
        ),
        "chunk_texts": [c["prepared_text"] for c in result["chunks"]],
        "chunks": chunks_meta,
        "pcm_samples": int(result["pcm"].shape[0]),
        "flow_lm_calls": len(result["calls"]),
    }
    if noise_calls:
        meta["noise_calls"] = noise_calls
    return meta, tensors


# --------------------------------------------------------------------------------------------
# Tokenizer and chunking references
# --------------------------------------------------------------------------------------------

TOKENIZER_SAMPLE = [
    "Hello world.",
    "Hello world. I am Kyutai's Pocket TTS.",
    "hello",
    "It's 3.5 degrees; isn't it?",
    "Bonjour à tous, ça va très bien !",
    "L'été dernier, nous sommes allés à Nice.",
    "« Je ne sais pas », a-t-elle dit.",
    "Größe, Straße und Äpfel über alles.",
    "Können Sie mir bitte helfen?",
    "¿Dónde está la estación? ¡Aquí!",
    "Mañana, el niño comió 3 plátanos.",
    "Perché la città è più bella di sera?",
    "Não sei; coração, ação e informação.",
    "Dit is één van de mooiste steden.",
    "Call 555-0199 at 10:30 a.m.",
    "The total is $12.99 (about 15 euros).",
    "1234567890",
    "2026-10-01",
    "Wait... what?!",
    "He said \u201chello\u201d and left \u2014 quickly.",
    "It\u2019s the caf\u00e9\u2019s menu.",
    "  leading and trailing spaces  ",
    "double  spaces   inside",
    "        Hi.",
    "tab\tand\nnewline",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "Unknown: 日本語 and \U0001f642 emoji.",
    "e\u0301 decomposed accent",
    "<s> and </s> and <unk> literally",
    "",
    " ",
    ".!...?",
    ",;:",
]


def tokenizer_reference(protos: dict) -> dict:
    tok = tokenizers.Tokenizer.from_file(str(REPO / "languages" / "tiny" / "tokenizer.json"))
    sp = spm.SentencePieceProcessor(model_proto=protos["proto"])
    entries = []
    for text in TOKENIZER_SAMPLE:
        json_ids = tok.encode(text).ids
        sp_ids = sp.encode(text, out_type=int)
        entries.append(
            {
                "text": text,
                "tokenizer_json_ids": json_ids,
                "tokenizer_json_tokens": tok.encode(text).tokens,
                "tokenizer_json_decode": tok.decode(json_ids),
                "sentencepiece_ids": sp_ids,
                "sentencepiece_pieces": sp.encode(text, out_type=str),
                "sentencepiece_decode": sp.decode(sp_ids),
                "json_equals_sentencepiece": json_ids == sp_ids,
            }
        )
    return {
        "files": {
            "tokenizer_json": "repo/languages/tiny/tokenizer.json",
            "sentencepiece": "repo/languages/tiny_small/tokenizer.model",
            "note": "tokenizer.json was converted from this .model; tiny_drifting's config "
                    "points at the same .model",
        },
        "vocab_size": VOCAB,
        "sentencepiece_unk_surface": sp.decode([sp.unk_id()]),
        "converter": "transformers 5.25 convert_slow_tokenizer.SpmConverter"
                     ".build_tokenizer_from_spm_proto(proto, [(piece, score)]) (legacy=True)",
        "python": {"tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__},
        "entries": entries,
    }


CHUNKING_INPUTS = [
    dict(text="hello world"),
    dict(text="Hello world. I am Kyutai's Pocket TTS. I'm fast enough to run on small CPUs. "
              "I hope you'll like me."),
    dict(text="The price went from 3.5 to 4.75 percent. Then it fell to 2.0."),
    dict(text="Dr. Smith met Mr. Brown at 10 a.m. They talked."),
    dict(text="Pi is 3.14159 and e is 2.71828, roughly."),
    dict(text="It\u2019s \u2018quoted\u2019 with curly apostrophes"),
    dict(text="\u201cHi?\u201d, she said."),
    dict(text="Wait... what?! Really? Yes!"),
    dict(text="A trailing comma,"),
    dict(text="A trailing dash -"),
    dict(text="(It ends with a bracket)"),
    dict(text="\"Already quoted.\""),
    dict(text="Line one\nline two\r\nline three"),
    dict(text="   lots   of   spaces   "),
    dict(text="one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, "
              "thirteen, fourteen, fifteen, sixteen, seventeen, eighteen, nineteen, twenty, "
              "twenty-one, twenty-two; twenty-three: twenty-four, twenty-five, twenty-six"),
    dict(text=LONG_TEXT),
    dict(text="a" * 3 + " b" * 70),
    dict(text="Short."),
    dict(text="Hi", pad_with_spaces=True),
    dict(text="Hello there my friend. How are you doing today?", pad_with_spaces=True),
    dict(text="Il a dit ; \u00ab Bonjour \u00bb : c'est tout", remove_semicolons=True,
         replace_characters={'"': "", "\u201c": "", "\u201d": "", "\u201e": ""}),
    dict(text="\u201eJa\u201c, sagte er. \u201eNein?\u201c, fragte sie.",
         replace_characters={'"': "", "\u201c": "", "\u201d": "", "\u201e": ""}),
    dict(text="lowercase start, no capitalisation", capitalize_first_letter=False),
    dict(text="no terminal punctuation added here", append_terminal_punctuation=False),
    dict(text="\u00e9t\u00e9 \u00e0 Paris"),
    dict(text="Numbers 1.2.3 and version 10.0.1. Next sentence."),
    dict(text="Unknown 日本語 characters. Another sentence."),
    dict(text="Long sentence one is right here and it keeps going on and on. Two.", max_tokens=10),
    dict(text=" "),
]


def chunking_reference(models: dict) -> dict:
    entries = []
    for spec in CHUNKING_INPUTS:
        for model_name in ("tiny", "tiny_small"):
            model = models[model_name]
            cfg = model.config
            settings = {
                "max_tokens": spec.get("max_tokens", 50),
                "pad_with_spaces_for_short_inputs": spec.get("pad_with_spaces", False),
                "remove_semicolons": spec.get("remove_semicolons", False),
                "append_terminal_punctuation": spec.get("append_terminal_punctuation", True),
                "capitalize_first_letter": spec.get("capitalize_first_letter", True),
                "replace_characters": spec.get("replace_characters", cfg.replace_characters),
            }
            tokenizer = model.flow_lm.conditioner.tokenizer
            entry = {"text": spec["text"], "tokenizer": model_name, "settings": settings}
            try:
                chunks = split_into_best_sentences(
                    tokenizer,
                    spec["text"],
                    settings["max_tokens"],
                    settings["pad_with_spaces_for_short_inputs"],
                    remove_semicolons=settings["remove_semicolons"],
                    append_terminal_punctuation=settings["append_terminal_punctuation"],
                    capitalize_first_letter=settings["capitalize_first_letter"],
                    replace_characters=settings["replace_characters"],
                )
            except ValueError as e:
                entry["error"] = f"ValueError: {e}"
                entries.append(entry)
                continue
            whole, _ = prepare_text_prompt(
                spec["text"],
                settings["pad_with_spaces_for_short_inputs"],
                settings["remove_semicolons"],
                settings["append_terminal_punctuation"],
                settings["capitalize_first_letter"],
                settings["replace_characters"],
            )
            entry["prepared_whole_text"] = whole
            entry["whole_text_token_ids"] = tokenizer.encode(whole.strip())
            entry["chunks"] = []
            for chunk in chunks:
                prepared, guess = prepare_text_prompt(
                    chunk,
                    settings["pad_with_spaces_for_short_inputs"],
                    settings["remove_semicolons"],
                    settings["append_terminal_punctuation"],
                    settings["capitalize_first_letter"],
                    settings["replace_characters"],
                )
                ids = tokenizer.encode(prepared)
                entry["chunks"].append(
                    {
                        "chunk": chunk,
                        "chunk_token_ids": tokenizer.encode(chunk),
                        "prepared_text": prepared,
                        "token_ids": ids,
                        "frames_after_eos_default": guess + 2,
                        "max_gen_len": model._estimate_max_gen_len(len(ids)),
                    }
                )
            entries.append(entry)
    return {
        "notes": [
            "chunks = split_into_best_sentences(tokenizer, text, max_tokens, ...) exactly as "
            "generate_audio_stream calls it; each chunk is then passed through "
            "prepare_text_prompt again (prepared_text) and that is what is tokenized "
            "(token_ids) and generated.",
            "frames_after_eos_default = prepare_text_prompt's guess (3 if <= 4 words else 1) + 2,"
            " used when frames_after_eos is None and the config has no "
            "model_recommended_frames_after_eos.",
            "max_gen_len = ceil((n_tokens / 3 + 2) * 12.5).",
            "tokenizer 'tiny' is repo/languages/tiny/tokenizer.json (tokenizers), 'tiny_small' "
            "is repo/languages/tiny_small/tokenizer.model (sentencepiece).",
        ],
        "entries": entries,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def export_voices(model_name: str, tmp: Path):
    model = models_cache[model_name]
    emb = REPO / "languages" / model_name / "embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    for voice, (rate, layout, seed) in PREDEFINED_VOICES.items():
        wav = tmp / f"{voice}.wav"
        write_wav16(wav, synth_speech(rate, layout, seed), rate)
        torch.manual_seed(seed)
        state = model.get_state_for_audio_prompt(wav, truncate=True)
        export_model_state(state, emb / f"{voice}.safetensors")


models_cache: dict[str, TTSModel] = {}


def write_legacy_voice():
    """jean's tiny voice in the legacy layout: /cache and /current_end (no /offset, /pad)."""
    src = safetensors.torch.load_file(REPO / "languages" / "tiny" / "embeddings" / "jean.safetensors")
    legacy = {}
    for key, value in src.items():
        module, name = key.split("/")
        if name == "cache":
            legacy[key] = value
        elif name == "offset":
            legacy[f"{module}/current_end"] = torch.zeros(int(value.view(-1)[0]))
    (OUT / "voices").mkdir(exist_ok=True)
    safetensors.torch.save_file(legacy, OUT / "voices" / "jean_legacy.safetensors")


def write_json(path: Path, obj):
    """Indented JSON with every list of scalars kept on one line."""
    import re

    text = json.dumps(obj, indent=1, ensure_ascii=False)
    scalar = r'(?:-?[0-9][0-9.eE+-]*|true|false|null|"(?:[^"\\]|\\.)*")'
    pattern = re.compile(r"\[\s*" + scalar + r"(?:,\s*" + scalar + r")*\s*\]")
    text = pattern.sub(
        lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text
    )
    assert json.loads(text) == obj
    path.write_text(text + "\n", encoding="utf-8")


def describe_state_dict(path: Path) -> list:
    with safetensors.safe_open(path, framework="pt") as f:
        return [[k, list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()]
                for k in f.keys()]


def generate_all():
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "cases").mkdir(parents=True)
    protos = build_tokenizers()
    for name in MODELS:
        build_random_model(name)
        models_cache[name] = load(name)
        install_eos_hooks(models_cache[name])

    voice = synth_speech(VOICE_WAV_RATE, VOICE_WAV_LAYOUT, 5)
    write_wav16(OUT / "voice.wav", voice, VOICE_WAV_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            export_voices(name, Path(tmp))
    write_legacy_voice()

    all_meta = []
    for case in CASES:
        meta, tensors = record_case(models_cache, case)
        safetensors.torch.save_file(
            {k: v.contiguous().float() for k, v in tensors.items()},
            OUT / "cases" / f"{case['name']}.safetensors",
        )
        meta["tensors"] = {k: list(v.shape) for k, v in tensors.items()}
        all_meta.append(meta)
        ends = [c["end"] for c in meta["chunks"]]
        print(f"case {case['name']}: thr {meta['eos_threshold']} chunks {len(ends)} {ends} "
              f"frames {[c['frames'] for c in meta['chunks']]} "
              f"pcm rms {float(tensors['pcm'].square().mean().sqrt()):.4f}")
    assert any(all(c["end"] == "eos" for c in m["chunks"]) for m in all_meta)
    assert any(any(c["end"] == "max_gen_len" for c in m["chunks"]) for m in all_meta)
    assert any(len(m["chunks"]) >= 3 for m in all_meta if m["name"] == "long")

    cases_json = {
        "generator": "tools/parity/pocket/make_reference.py",
        "reference": {"pocket_tts": "4.0.1", "torch": torch.__version__.split("+")[0]},
        "hf_repo": HF_REPO,
        "models": {
            name: {
                "config": f"{name}.yaml",
                "what": MODELS[name][1],
                "weights": f"repo/languages/{name}/model.safetensors",
                "keys": describe_state_dict(REPO / "languages" / name / "model.safetensors"),
                "voices": {
                    v: {
                        "file": f"repo/languages/{name}/embeddings/{v}.safetensors",
                        "keys": describe_state_dict(
                            REPO / "languages" / name / "embeddings" / f"{v}.safetensors"),
                    }
                    for v in PREDEFINED_VOICES
                },
            }
            for name in MODELS
        },
        "notes": NOTES,
        "cases": all_meta,
    }
    write_json(OUT / "cases.json", cases_json)
    write_json(OUT / "tokenizer_reference.json", tokenizer_reference(protos))
    write_json(OUT / "chunking_reference.json", chunking_reference(models_cache))
    (OUT / "README.md").write_text(README, encoding="utf-8")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(ROOT)}: {total / 1e6:.2f} MB")
    assert total < 3.5e6, total


NOTES = [
    "latents.<c> [T,32]: the latents FlowLMModel.forward returned for the T frames the "
    "reference queued for Mimi, in normalised space. Mimi decodes latents * flow_lm.emb_std + "
    "flow_lm.emb_mean.",
    "eos_logits.<c> [S] and hidden.<c> [S,D]: the raw out_eos logit and its input (out_norm of "
    "the transformer output, then z_proj when the config has z_dim) for every autoregressive "
    "step the reference ran. S = T + 1 when the chunk ended by EOS (the step at which the loop "
    "breaks is computed, its noise drawn, and its latent thrown away), S = T = max_gen_len "
    "otherwise.",
    "split_chunks: split_into_best_sentences(text); chunk_texts / chunks[].prepared_text: "
    "each of them after prepare_text_prompt again, the text that is tokenized (token_ids) "
    "and generated.",
    "text_pass.*.<c>: the text-prompt pass of chunk c (its latent and EOS are discarded by the "
    "reference).",
    "EOS rule per chunk: eos_step = first step g >= 6 with eos_logit > eos_threshold; the "
    "loop breaks at step g = eos_step + frames_after_eos before queueing, so "
    "T = eos_step + frames_after_eos. frames_after_eos is the frames_after_eos argument, else "
    "the config's model_recommended_frames_after_eos, else (3 if the chunk has <= 4 words "
    "else 1) + 2.",
    "noise.<c> [1+S,32] (temperature > 0 only): row 0 = the text-prompt pass of chunk c, row "
    "1+k = autoregressive step k. noise.voice [1,32]: the voice-prompt pass of a cloned voice "
    "(drawn before any chunk). noise.all: every draw in call order; noise_calls maps each call "
    "index to its tensor and row. The values are the tensor after torch.nn.init.normal_(std="
    "sqrt(temp)) or trunc_normal_(std=sqrt(temp), a=-noise_clamp, b=noise_clamp) -- the "
    "bounds are absolute, not in units of std.",
    "pcm [N]: generate_audio's return value; chunk c occupies samples [pcm_start, pcm_start + "
    "frames*1920). Each chunk is decoded by a fresh Mimi state and its first 120 samples "
    "(24000 // 200) are multiplied by torch.linspace(0, 1, 120). Recorded with one frame per "
    "Mimi call (max_decoder_frames_per_call = 1).",
    "voice.* (cloned cases): voice.wav_samples (audio_read: int16 / 32768), voice.audio_24k "
    "(convert_audio: scipy resample_poly up/down by the gcd), voice.audio_prompt "
    "(end_on_pause), voice.latents (mimi.encode_to_latent, [F,32], NOT normalised), "
    "voice.speaker_conditioning (latents @ speaker_proj_weight.T, [F,D]), voice.prompt "
    "([bos_before_voice; speaker_conditioning], [1+F,D]), voice.hidden/latent/eos_logit of the "
    "voice-prompt pass; cases/<case>.voice_state.safetensors is the state after the voice "
    "prompt, written with export_model_state.",
    "chunks[].offset_before_text_pass: the KV offset when the chunk's text pass starts (the "
    "voice prompt length: 1 + voice frames). chunks[].min_abs_logit_minus_threshold: the "
    "smallest |eos_logit - eos_threshold| over the steps that decide the end (>= 0.01 by "
    "construction, so float differences cannot flip the outcome).",
    "Every chunk starts from a deep copy of the voice state (offset = voice prompt length), "
    "whose KV cache is grown with NaN to offset + n_tokens + max_gen_len.",
]

README = """# Pocket TTS parity fixtures

Written by `tools/parity/pocket/make_reference.py` (pocket-tts 4.0.1, one torch thread); rerun it
to regenerate everything here. All weights are random: the outputs only mean something as a
reference for the Rust port.

- `repo/` -- served by the Rust tests' loopback hub as the repo `kyutai-test/pocket-tts`, laid out
  like the published ones:
  - `languages/<model>/model.safetensors` -- the `TTSModel.state_dict()` (`flow_lm.*`, `mimi.*`,
    encoder included), the layout `weights_path` is loaded from with `strict=True`.
  - `languages/tiny/tokenizer.json` (HF tokenizers) converted from
    `languages/tiny_small/tokenizer.model` (SentencePiece unigram, 320 pieces), which
    `tiny_drifting.yaml` uses too.
  - `languages/<model>/embeddings/{alba,jean}.safetensors` -- voice states written by
    `export_model_state` (keys `transformer.layers.N.self_attn/{cache,offset,pad}`).
- `tiny.yaml` (mirrors english_2026-10), `tiny_small.yaml` (english_2m_2026-10: pointwise,
  GQA 3:1, low-rank table, z_dim, own decoder SEANet/transformer), `tiny_drifting.yaml`
  (english_7m_2026-10: drifting, GQA 4:2) -- configs in the package's format, paths
  `hf://kyutai-test/pocket-tts/languages/<model>/...@main`.
- `voice.wav` -- 16 kHz 16-bit mono synthetic prompt with a pause and trailing silence.
- `voices/jean_legacy.safetensors` -- tiny's `jean` in the legacy layout (`current_end`).
- `cases.json` -- every case: model, text, voice, temperature, EOS threshold, decode steps,
  noise clamp, max tokens, chunks (prepared text, token ids, frames, EOS step, end reason), the
  noise call map, tensor shapes, the key list of every model and voice file, and notes on how
  each tensor was recorded.
- `cases/<case>.safetensors` -- f32 tensors of one case (`latents.<c>`, `eos_logits.<c>`,
  `hidden.<c>`, `text_pass.*.<c>`, `pcm`, `noise.*` for temperature > 0, `voice.*` for cloned
  voices); `cases/<case>.voice_state.safetensors` -- the cloned voice state.
- `tokenizer_reference.json` -- ids from Python `tokenizers` (tokenizer.json) and
  `sentencepiece` (.model) for a multilingual sample.
- `chunking_reference.json` -- `split_into_best_sentences` + `prepare_text_prompt` on tricky
  inputs: chunk strings, the text each chunk is generated from, and token ids.

Cases (temperature 0 unless said; EOS thresholds are picked between recorded logits):

| case | model | what it covers |
|---|---|---|
| `short` | tiny | predefined voice `alba`, one chunk, ends by EOS |
| `long` | tiny | 4 chunks (sentence split, comma split, packing), `frames_after_eos=2` |
| `voice_state` | tiny | voice given as a file path (`jean`) |
| `legacy_voice` | tiny | legacy voice file (`current_end`, no `offset`/`pad`) |
| `cloned` | tiny | voice cloned from `voice.wav` (16 kHz -> 24 kHz, `end_on_pause`, Mimi encoder) |
| `small` | tiny_small | pointwise head, GQA 3:1, low-rank table, z_dim, SentencePiece |
| `drifting` | tiny_drifting | drifting head, GQA 4:2 |
| `temp` | tiny | temperature 0.7, cloned voice: noise of the voice, text and step passes |
| `temp_clamp` | tiny | temperature 0.7, `noise_clamp` 0.5 (truncated normal) |
| `lsd_steps` | tiny | 4 LSD decode steps, ends by `max_gen_len` |

`make_reference.py --check-rust-voice FILE.safetensors [--model tiny] [--compare-with REF]`
loads a voice state written by the Rust port with the package's loader and generates with it.
"""


# --------------------------------------------------------------------------------------------
# --check-rust-voice
# --------------------------------------------------------------------------------------------


def check_rust_voice(path: Path, model_name: str, compare_with: Path | None) -> int:
    model = load(model_name)
    state = model.get_state_for_audio_prompt(path)
    for module, tensors in state.items():
        print(module, {k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()})
    status = 0
    if compare_with is not None:
        ref = model.get_state_for_audio_prompt(compare_with)
        if ref.keys() != state.keys():
            print(f"modules differ: {sorted(ref)} vs {sorted(state)}")
            status = 1
        for module in ref:
            for key, r in ref[module].items():
                s = state.get(module, {}).get(key)
                if s is None:
                    print(f"{module}/{key}: missing")
                    status = 1
                    continue
                if key == "cache":
                    n = int(ref[module]["offset"].view(-1)[0])
                    r, s = r[:, :, :n], s[:, :, :n]
                if r.shape != s.shape:
                    print(f"{module}/{key}: shape {list(s.shape)} vs {list(r.shape)}")
                    status = 1
                    continue
                diff = float((r.double() - s.double()).abs().max()) if r.numel() else 0.0
                print(f"{module}/{key}: max abs diff {diff:.3g}")
                if not diff <= 1e-4:
                    status = 1
    model.eos_threshold = -1e9  # EOS at step 6: 6 + frames_after_eos frames
    pcm = model.generate_audio(state, "Hello world.")
    print(f"generated {pcm.shape[0]} samples ({pcm.shape[0] // FRAME} frames), "
          f"finite: {bool(torch.isfinite(pcm).all())}")
    if not torch.isfinite(pcm).all() or pcm.shape[0] == 0:
        status = 1
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-rust-voice", type=Path, metavar="FILE.safetensors")
    parser.add_argument("--model", default="tiny", choices=sorted(MODELS))
    parser.add_argument("--compare-with", type=Path, metavar="REF.safetensors")
    args = parser.parse_args()
    if args.check_rust_voice is not None:
        sys.exit(check_rust_voice(args.check_rust_voice, args.model, args.compare_with))
    generate_all()


if __name__ == "__main__":
    main()
