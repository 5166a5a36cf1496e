#!/usr/bin/env python3
"""Record the Python reference (``moshi`` 0.2.x ``TTSModel``) with direct (two-pass)
classifier-free guidance, for the Rust test ``tests/tts_cfg.rs``.

Direct CFG is what the reference does for a model *without* a ``cfg`` conditioner (not trained
with CFG distillation) when ``cfg_coef != 1``: ``TTSModel.generate`` appends the null conditions
(``dropout_all_conditions``) and ``LMGen`` runs a batch of 2; with the defaults of ``generate``
(``cfg_is_no_text=True``) the null pass gets a zero text token and its text logits are dropped,
and every depformer step mixes ``null + (cond - null) * cfg_coef``.

The tiny repo is ``tests/support/tiny.rs::tts_repo_direct_cfg`` (the tiny TTS config without the
``cfg`` conditioner); dump it first, then run this script::

    cargo run --example dump_tiny_repos -- /tmp/tiny
    /work/venv-parity/bin/python tools/parity/tts/make_cfg_reference.py /tmp/tiny

(a venv with ``pip install moshi==0.2.13``, which brings ``torch``; moshi 0.2.13 and torch 2.9
were used.)

For each text of ``TEXTS`` it runs ``TTSModel.generate`` greedy (``temp`` 0) with ``cfg_coef``
``CFG_COEF`` and the voice ``VOICE``, checks the waveform equals ``simple_generate``'s, and writes
``tests/fixtures/tts_cfg/<name>.json``: the text, the entries, per step the sampled and fed text
tokens, the frames ``[1 + n_q]`` leaving ``LMGen``, ``end_step``, ``delay_steps``, the text logits
of the first steps and the waveform length; and ``<name>.pcm.f32``, the waveform (little-endian
f32, 24 kHz mono), which the Rust tests compare sample by sample.

It also records a model voiced by an audio prefix, as ``kyutai/tts-0.75b-en-public`` is
(``tests/support/tiny.rs::tts_repo_prefix``: no conditioners, no cross-attention): each voice of
``PREFIX_VOICES`` is a WAV of ``<dump>/prefix_voice/`` (24 kHz, so no resampling), encoded by
``TTSModel.get_prefix`` and fed by ``generate(..., prefixes=[prefix])`` with direct CFG
``PREFIX_CFG_COEF`` (the ``simple_generate`` default; the null pass masks the prefix,
``cfg_is_no_prefix``), into ``<case>.json`` (with the prefix codes added) and ``<case>.pcm.f32``.
"""

import json
import struct
import sys
from pathlib import Path

import torch
from moshi.models import loaders
from moshi.models.tts import TTSModel

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "tts_cfg"
VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"
CFG_COEF = 3.0
PREFIX_CFG_COEF = 2.0
PREFIX_TEXT = "Hello from Rust."
# Case name -> voice file in `<dump>/prefix_voice/` (`tiny::prefix_voice_wav` and
# `tiny::prefix_voice_wav_with_period(30)`).
PREFIX_VOICES = {"prefix_hello": "voice.wav", "prefix_hello_other_voice": "other_voice.wav"}
LOGIT_STEPS = 3
MAX_STEPS = 400
TEXTS = {
    "hello": "Hello from Rust.",
    "bonjour": "Bonjour, je m'appelle Léa: (très) près du café.",
}


def checkpoint(repo: Path) -> loaders.CheckpointInfo:
    raw = json.loads((repo / "config.json").read_text())
    return loaders.CheckpointInfo.from_hf_repo(
        "local/tiny",
        moshi_weights=repo / raw["moshi_name"],
        mimi_weights=repo / raw["mimi_name"],
        tokenizer=repo / raw["tokenizer_name"],
        config_path=repo / "config.json",
        mimi_config_path=repo / raw["mimi_config_name"],
    )


def logged_generate(tts: TTSModel, *args, **kwargs):
    """``tts.generate``, also returning the text logits of the first steps (of the conditioned
    pass: the null pass is the second half of the batch)."""
    logits_log: list[list[float]] = []
    forward_text = tts.lm.forward_text

    def logging_forward_text(*a, **k):
        out, text_logits = forward_text(*a, **k)
        if len(logits_log) < LOGIT_STEPS:
            logits_log.append([float(x) for x in text_logits[0, 0, 0]])
        return out, text_logits

    tts.lm.forward_text = logging_forward_text  # LMGen captures the bound method at start.
    try:
        return tts.generate(*args, **kwargs), logits_log
    finally:
        del tts.lm.forward_text


def write_pcm(path: Path, pcm: torch.Tensor) -> None:
    path.write_bytes(struct.pack(f"<{pcm.shape[0]}f", *pcm.tolist()))


def run(tts: TTSModel, text: str, voice: Path) -> tuple[dict, torch.Tensor]:
    entries = tts.prepare_script([text], padding_between=1)
    # As `simple_generate` for a model without CFG distillation: no `cfg` value.
    attributes = tts.make_condition_attributes([voice], cfg_coef=None)
    result, logits_log = logged_generate(tts, [entries], [attributes])

    with tts.mimi.streaming(1), torch.no_grad():
        pcms = []
        for frame in result.frames[tts.delay_steps:]:
            pcms.append(torch.clip(tts.mimi.decode(frame[:, 1:, :]), -1, 1))
    pcms = pcms[2:]
    pcm = torch.concat([p[0, 0, :] for p in pcms[:result.end_steps[0]]])

    direct = tts.simple_generate(text, str(voice), cfg_coef=CFG_COEF, show_progress=False)[0]
    assert tts.cfg_coef == CFG_COEF
    assert torch.equal(direct, pcm), "replica of simple_generate differs"

    return {
        "text": text,
        "voice": VOICE,
        "cfg_coef": CFG_COEF,
        "max_steps": MAX_STEPS,
        "entries": [
            {"tokens": e.tokens, "text": e.text, "padding": e.padding} for e in entries
        ],
        "text_tokens": [[int(a), int(b)] for a, b in result.logged_text_tokens[0]],
        "frames": [[int(x) for x in f[0, :, 0]] for f in result.frames],
        "end_step": result.end_steps[0],
        "delay_steps": tts.delay_steps,
        "text_logits_first_steps": logits_log,
        "pcm_samples": int(pcm.shape[0]),
    }, pcm


def run_prefix(tts: TTSModel, text: str, wav: Path) -> tuple[dict, torch.Tensor]:
    prefix = tts.get_prefix(wav)
    entries = tts.prepare_script([text], padding_between=1)
    result, logits_log = logged_generate(tts, [entries], [], prefixes=[prefix])
    frames = prefix.shape[-1]
    with tts.mimi.streaming(1), torch.no_grad():
        pcms = []
        for frame in result.frames[tts.delay_steps:]:
            pcms.append(torch.clip(tts.mimi.decode(frame[:, 1:, :]), -1, 1))
    pcms = pcms[2:]
    pcm = torch.concat([p[0, 0, :] for p in pcms[frames:result.end_steps[0]]])
    direct = tts.simple_generate(text, "file://" + str(wav), cfg_coef=PREFIX_CFG_COEF,
                                 show_progress=False)[0]
    assert torch.equal(direct, pcm), "replica of simple_generate differs"
    return {
        "text": text,
        "voice_wav": wav.name,
        "cfg_coef": PREFIX_CFG_COEF,
        "max_steps": MAX_STEPS,
        "prefix_codes": [[int(x) for x in row] for row in prefix[1:]],
        "entries": [
            {"tokens": e.tokens, "text": e.text, "padding": e.padding} for e in entries
        ],
        "text_tokens": [[int(a), int(b)] for a, b in result.logged_text_tokens[0]],
        "frames": [[int(x) for x in f[0, :, 0]] for f in result.frames],
        "end_step": result.end_steps[0],
        "delay_steps": tts.delay_steps,
        "text_logits_first_steps": logits_log,
        "pcm_samples": int(pcm.shape[0]),
    }, pcm


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tinycfg")
    torch.manual_seed(0)
    repo = root / "tts_direct_cfg"
    info = checkpoint(repo)
    lm_n_q = json.loads((repo / "config.json").read_text())["n_q"]
    tts = TTSModel.from_checkpoint_info(
        info, n_q=lm_n_q, temp=0.0, cfg_coef=CFG_COEF, device="cpu", dtype=torch.float32,
        max_gen_length=MAX_STEPS,
    )
    assert not tts.valid_cfg_conditionings, "the model must have no cfg conditioner"
    voice = root / "voices" / (VOICE + tts.voice_suffix)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        record, pcm = run(tts, text, voice)
        assert record["end_step"] is not None, f"{name}: no end_step within {MAX_STEPS} steps"
        assert len(record["text_tokens"]) < MAX_STEPS, f"{name}: hit the step cap"
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        write_pcm(OUT / f"{name}.pcm.f32", pcm)
        print(f"{name}: {len(record['text_tokens'])} steps, end_step {record['end_step']}, "
              f"{record['pcm_samples']} samples")

    repo = root / "tts_prefix"
    lm_n_q = json.loads((repo / "config.json").read_text())["n_q"]
    tts = TTSModel.from_checkpoint_info(
        checkpoint(repo), n_q=lm_n_q, temp=0.0, cfg_coef=PREFIX_CFG_COEF, device="cpu",
        dtype=torch.float32,
        max_gen_length=MAX_STEPS,
    )
    assert not tts.multi_speaker, "the prefix model must have no speaker_wavs"
    pcms = []
    for name, wav in PREFIX_VOICES.items():
        record, pcm = run_prefix(tts, PREFIX_TEXT, root / "prefix_voice" / wav)
        assert record["end_step"] is not None and len(record["text_tokens"]) < MAX_STEPS
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        write_pcm(OUT / f"{name}.pcm.f32", pcm)
        pcms.append(pcm)
        print(f"{name}: {len(record['prefix_codes'][0])} prefix frames, "
              f"{len(record['text_tokens'])} steps, {record['pcm_samples']} samples")
    # The voice must change the audio, or the tests could not tell voices apart.
    assert pcms[0].shape != pcms[1].shape or not torch.equal(pcms[0], pcms[1])


if __name__ == "__main__":
    main()
