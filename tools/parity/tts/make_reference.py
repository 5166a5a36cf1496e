#!/usr/bin/env python3
"""Record the Python reference (``moshi`` 0.2.x ``TTSModel``) on the tiny TTS repo, for the Rust
parity tests (``tests/tts_parity.rs``).

The tiny repos are the exact bytes the Rust tests publish on the loopback hub
(``tests/support/tiny.rs``); dump them first::

    TINY_REPOS_DUMP_DIR=/tmp/tiny cargo test --test tiny_models dump_repos_for_python_check
    /tmp/pyenv/bin/python tools/parity/tts/make_reference.py /tmp/tiny

(``pip install moshi torch`` in a venv; moshi 0.2.13 and torch 2.x were used.)

For each text of ``TEXTS`` it follows ``TTSModel.simple_generate`` step by step, greedy
(``temp`` 0), with the voice ``expresso/ex03-ex01_happy_001_channel1_334s.wav`` of the tiny voices
repo and the ``cfg`` LUT value "2.0" (CFG distillation: no second pass), and writes to
``tests/fixtures/tts_parity/``:

* ``<name>.json``: the text, the entries of ``prepare_script([text], padding_between=1)``
  (tokens, word, padding), per LM step the sampled text token and the token fed back (after the
  state machine, muxed with the second stream), the frames ``[1 + n_q]`` that leave ``LMGen``
  (text + audio tokens, delays undone), ``end_step``, the text logits of the first steps (for
  debugging numeric drift), and the waveform length;
* ``<name>.pcm.f32``: the waveform ``simple_generate`` returns (little-endian f32, 24 kHz mono),
  for the texts of ``FULL_PCM`` only, to keep the fixtures small; for every text the JSON holds
  the RMS of each 1920-sample frame of it (``frame_rms``).

The tiny random model ends by itself: the state machine forces a new word after
``max_padding`` (8) pads, so every text reaches ``end_step`` and generation stops
``delay_steps + final_padding`` steps later, exactly as in the reference. ``max_gen_length`` is
still capped (``MAX_STEPS``) in both, as a guard; the recorded runs never reach it.
"""

import json
import struct
import sys
from pathlib import Path

import torch
from moshi.models import loaders
from moshi.models.tts import TTSModel

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "tts_parity"
VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"
MAX_STEPS = 400
LOGIT_STEPS = 3
FULL_PCM = {"hello"}
TEXTS = {
    "hello": "Hello from Rust.",
    "bonjour": "Bonjour, je m'appelle Léa: (très) près du café.",
    "two_sentences": "Is it working? Yes, it is working!",
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


def run(tts: TTSModel, text: str, voice: Path) -> dict:
    logits_log: list[list[float]] = []
    forward_text = tts.lm.forward_text

    def logging_forward_text(*args, **kwargs):
        out, text_logits = forward_text(*args, **kwargs)
        if len(logits_log) < LOGIT_STEPS:
            logits_log.append([float(x) for x in text_logits[0, 0, 0]])
        return out, text_logits

    tts.lm.forward_text = logging_forward_text  # LMGen captures the bound method at start.
    try:
        entries = tts.prepare_script([text], padding_between=1)
        attributes = tts.make_condition_attributes([voice], cfg_coef=2.0)
        result = tts.generate([entries], [attributes])
    finally:
        del tts.lm.forward_text

    # Decoding as in `simple_generate`.
    with tts.mimi.streaming(1), torch.no_grad():
        pcms = []
        for frame in result.frames[tts.delay_steps:]:
            pcms.append(torch.clip(tts.mimi.decode(frame[:, 1:, :]), -1, 1))
    pcms = pcms[2:]
    pcm = torch.concat([p[0, 0, :] for p in pcms[:result.end_steps[0]]])

    # The same through the public entry point, to be sure this replica is faithful.
    direct = tts.simple_generate(text, str(voice), cfg_coef=2.0, show_progress=False)[0]
    assert torch.equal(direct, pcm), "replica of simple_generate differs"

    return {
        "text": text,
        "entries": [
            {"tokens": e.tokens, "text": e.text, "padding": e.padding} for e in entries
        ],
        "text_tokens": [[int(a), int(b)] for a, b in result.logged_text_tokens[0]],
        "frames": [[int(x) for x in f[0, :, 0]] for f in result.frames],
        "end_step": result.end_steps[0],
        "delay_steps": tts.delay_steps,
        "text_logits_first_steps": logits_log,
        "pcm_samples": int(pcm.shape[0]),
        "frame_rms": [float(f.pow(2).mean().sqrt()) for f in pcm.split(1920)],
    }, pcm


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny")
    torch.manual_seed(0)
    info = checkpoint(root / "tts")
    lm_n_q = json.loads((root / "tts" / "config.json").read_text())["n_q"]
    tts = TTSModel.from_checkpoint_info(
        info, n_q=lm_n_q, temp=0.0, device="cpu", dtype=torch.float32, max_gen_length=MAX_STEPS
    )
    voice = root / "voices" / (VOICE + tts.voice_suffix)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        record, pcm = run(tts, text, voice)
        assert record["end_step"] is not None, f"{name}: no end_step within {MAX_STEPS} steps"
        assert len(record["text_tokens"]) < MAX_STEPS, f"{name}: hit the step cap"
        record["voice"] = VOICE
        record["cfg"] = "2.0"
        record["max_steps"] = MAX_STEPS
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        if name in FULL_PCM:
            (OUT / f"{name}.pcm.f32").write_bytes(struct.pack(f"<{pcm.shape[0]}f", *pcm.tolist()))
        print(f"{name}: {len(record['text_tokens'])} steps, end_step {record['end_step']}, "
              f"{pcm.shape[0]} samples, peak {float(pcm.abs().max()):.4f}")


if __name__ == "__main__":
    main()
