#!/usr/bin/env python3
"""Reference STT runs with the Python ``moshi`` package's own streaming loop, for the Rust parity
tests (``tests/stt_parity.rs``, ``tests/stt_pipeline.rs``, ``tests/stt_cli.rs``).

Inputs: the talkative tiny STT repos (``tests/support/stt_tiny.rs``), written by the Rust
builders so that both sides load identical bytes::

    cargo run --example dump_tiny_repos -- /tmp/tiny
    /work/venv-parity/bin/python tools/parity/stt/stt_reference.py /tmp/tiny

(a venv with ``pip install moshi==0.2.13``, which brings ``torch`` and ``sphn``.)

Writes (relative to the repository root):

* ``tests/fixtures/stt_parity/speech.wav`` -- 1.6 s of a synthetic voice-like signal (harmonic
  bursts with pauses), 24 kHz mono 16-bit, deterministic (kept if it exists).
* ``tests/fixtures/stt_parity/reference.json`` -- one record per case of ``CASES``: the repo
  without a silence prefix (``stt_config`` as the published ``stt-1b-en_fr``) and the one with
  a 2 s prefix (``tiny::STT_PREFIX_SECONDS``).

The loop is the one of Kyutai's ``scripts/stt_from_file_pytorch.py``
(kyutai-labs/delayed-streams-modeling): the audio, zero-padded to a whole number of 1920-sample
frames, between ``ceil(audio_silence_prefix_seconds * 12.5)`` silent chunks and
``ceil(audio_delay_seconds * 12.5)`` silent chunks; each chunk goes through streaming
``mimi.encode`` and then ``LMGen.step`` (greedy); words come from the text tokens by that
script's rule (``reference_words``). Each record holds:

* ``mimi_codes``: the codes Mimi gives for every chunk (the Rust tests compare theirs);
* ``reference``: the text tokens and words of that loop, as it is;
* the frame alignment, measured: ``lmgen_frame_at_step[k]`` is the chunk whose codes
  ``LMGen`` hands to the model at step ``k`` (``None``: the initial tokens), found by feeding it
  codes that name their chunk. ``LMGen`` feeds chunk ``k`` at step ``k`` and never shows chunk 0
  to the model; the Rust ``moshi`` crate's ``asr::State`` feeds chunk ``k - 1`` at step ``k``
  (``ItemState::next_token`` returns the previous frame's code), a convention stated here as
  ``ASR_STATE_FRAME_OFFSET`` and measured on the Rust side by
  ``tests/stt_parity.rs::the_asr_state_feeds_each_frame_one_step_later``. The two Kyutai
  implementations are one frame apart: ``audio_shift_frames`` is computed from the two;
* ``mapped``: the same loop, with the codes of chunk ``k - audio_shift_frames`` given to
  ``LMGen.step`` at step ``k``: what the Rust transcriber must produce, step for step, with
  each step's voice-activity probabilities (``pause_probabilities``: the first value of each
  extra head's softmax, from ``LMGen.step_with_extra_heads``). Its words
  by the script's rule, with each word's positions (``start_step``, ``end_step``) and times, are
  what the Rust tests turn into the transcriber's timings (the mapping of timing conventions is
  stated in ``tests/support/stt_reference.rs``).

Because the two word rules (this script's and ``asr::State``'s) only agree on clean token
patterns, the script checks the mapped tokens are clean (``check_clean``) and fails otherwise.
"""

import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import sphn
import torch
from moshi.models import LMGen, loaders

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "stt_parity"
SR = 24000
FRAME = 1920
FRAME_RATE = 12.5
END_OF_PADDING = 0
PADDING = 3
# The Rust `moshi` crate's `asr::State` feeds the codes of frame k - 1 at step k (stated here,
# measured by tests/stt_parity.rs).
ASR_STATE_FRAME_OFFSET = 1
CASES = {"plain": "stt_talkative", "prefix": "stt_talkative_prefix"}


def make_audio() -> np.ndarray:
    """Harmonic bursts (a crude voiced sound) separated by short pauses, 1.6 s."""
    t = np.arange(int(1.6 * SR)) / SR
    sig = np.zeros_like(t)
    bursts = [(0.10, 0.45, 140.0), (0.55, 0.90, 180.0), (1.00, 1.50, 120.0)]
    for start, end, f0 in bursts:
        m = (t >= start) & (t < end)
        env = np.sin(np.pi * (t[m] - start) / (end - start)) ** 2
        voice = sum(np.sin(2 * np.pi * f0 * k * t[m]) / k for k in range(1, 8))
        sig[m] += 0.3 * env * voice
    return np.clip(np.round(sig * 32767), -32768, 32767).astype("<i2")


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def load(repo: Path):
    raw = json.loads((repo / "config.json").read_text())
    info = loaders.CheckpointInfo.from_hf_repo(
        "local/tiny",
        moshi_weights=repo / raw.get("moshi_name", loaders.MOSHI_NAME),
        mimi_weights=repo / raw["mimi_name"],
        tokenizer=repo / raw["tokenizer_name"],
        config_path=repo / "config.json",
        mimi_config_path=repo / raw["mimi_config_name"],
    )
    mimi = info.get_mimi(device="cpu")
    lm = info.get_moshi(device="cpu", dtype=torch.float32)
    lm.eval()
    return info, mimi, lm


def chunks(audio: torch.Tensor, stt_config: dict) -> tuple[int, int, list[torch.Tensor]]:
    """The chunks of `stt_from_file_pytorch.py`: silent prefix chunks, the audio padded to whole
    frames, silent suffix chunks."""
    if audio.shape[-1] % FRAME != 0:
        audio = torch.nn.functional.pad(audio, (0, FRAME - audio.shape[-1] % FRAME))
    n_prefix = math.ceil(stt_config["audio_silence_prefix_seconds"] * FRAME_RATE)
    n_suffix = math.ceil(stt_config["audio_delay_seconds"] * FRAME_RATE)
    silence = torch.zeros((1, 1, FRAME), dtype=torch.float32)
    return n_prefix, n_suffix, (
        [silence] * n_prefix + list(torch.split(audio[:, None], FRAME, dim=-1)) + [silence] * n_suffix
    )


def lmgen_frame_alignment(lm, steps: int = 6) -> list:
    """Which chunk's codes `LMGen` gives the model at each step: chunk k is given codes that
    name it (k + 1 in every codebook), and the model's input is read at each step."""
    seen = []
    forward_text = lm.forward_text

    def spying_forward_text(sequence, *args, **kwargs):
        seen.append([int(x) for x in sequence[0, 1:, 0]])
        return forward_text(sequence, *args, **kwargs)

    lm.forward_text = spying_forward_text  # LMGen captures the bound method at start.
    try:
        lm_gen = LMGen(lm, temp=0, temp_text=0.0)
        with torch.no_grad(), lm_gen.streaming(1):
            for k in range(steps):
                lm_gen.step(torch.full((1, lm.num_audio_codebooks, 1), k + 1, dtype=torch.long))
    finally:
        del lm.forward_text
    alignment = []
    for codes in seen:
        assert len(set(codes)) == 1, codes
        alignment.append(None if codes[0] == lm.card else codes[0] - 1)
    return alignment


def run_loop(mimi, lm, chunk_list: list[torch.Tensor], shift: int) -> tuple[list, list, list]:
    """The streaming loop: Mimi encodes each chunk, `LMGen.step` gets the codes of chunk
    `k - shift` at step k (those of chunk 0 before; `LMGen` shows the model its initial tokens
    at step 0 anyway). Returns the codes of every chunk, the text token of every step, and
    every step's voice-activity probabilities: `LMGen.step_with_extra_heads`, as Kyutai's
    scripts and Unmute read them, each head's softmax, its first value (the `moshi` crate's
    `asr::State` reports the same, `AsrMsg::Step { prs }`)."""
    lm_gen = LMGen(lm, temp=0, temp_text=0.0)
    codes, tokens, prs = [], [], []
    with torch.no_grad(), mimi.streaming(1), lm_gen.streaming(1):
        for k, chunk in enumerate(chunk_list):
            codes.append(mimi.encode(chunk))
            out, heads = lm_gen.step_with_extra_heads(codes[max(0, k - shift)])
            tokens.append(int(out[0, 0, 0]))
            prs.append([float(head[0, 0, 0]) for head in heads])
    return [[int(c) for c in frame[0, :, 0]] for frame in codes], tokens, prs


def reference_words(tokens: list[int], tokenizer, offset_seconds: float) -> list[dict]:
    """Words and timings from text tokens by the rule of `tokens_to_timestamped_text` in
    `stt_from_file_pytorch.py`: a word is what lies between two end-of-padding tokens (tokens at
    most `PADDING` left out); it starts at the step after the first and ends at the second, in
    seconds minus `offset_seconds`, clamped at 0; the last segment ends at the end-of-sequence
    token, or one second later, or at the end. (Segments of several words share their time in
    that script; `check_clean` makes sure there are none.)"""
    boundaries = [i for i, t in enumerate(tokens) if t == END_OF_PADDING]
    segments = list(zip([b + 1 for b in boundaries], boundaries[1:]))
    if boundaries:
        start = boundaries[-1] + 1
        eos = [i for i, t in enumerate(tokens[start:]) if t == tokenizer.eos_id()]
        end = start + eos[0] if eos else min(len(tokens), start + FRAME_RATE)
        segments.append((start, end))
    words = []
    for start, end in segments:
        text = tokenizer.decode([t for t in tokens[start:int(end)] if t > PADDING])
        if not text.split():
            continue
        words.append({
            "text": text,
            "start_step": start,
            "end_step": end,
            "start_s": max(0.0, start / FRAME_RATE - offset_seconds),
            "end_s": max(0.0, end / FRAME_RATE - offset_seconds),
        })
    return words


def check_clean(name: str, tokens: list[int], tokenizer, delay_steps: int) -> None:
    """Checks the token patterns on which this script's word rule and `asr::State`'s agree
    (`asr::State` counts a step's token from step `delay_steps - 1` on, keeps begin/end-of-sequence
    tokens as word pieces, and ends a word at a padding token too): from that step on no
    begin/end-of-sequence token; every word alone between two end-of-padding tokens, the first
    of them counted by `asr::State`, its pieces contiguous and making one word; no word piece
    after the last end-of-padding token, nor between the first counted step and the first
    end-of-padding token."""
    first = delay_steps - 1
    boundaries = [i for i, t in enumerate(tokens) if t == END_OF_PADDING]
    assert boundaries, f"{name}: no end-of-padding token: {tokens}"
    problems = []
    if any(t in (1, 2) for t in tokens[first:]):
        problems.append("begin/end-of-sequence tokens")
    if any(t > PADDING for t in tokens[first:boundaries[0]]):
        problems.append("a word before the first end-of-padding token")
    if any(t > PADDING for t in tokens[boundaries[-1]:]):
        problems.append("a word after the last end-of-padding token")
    for a, b in zip(boundaries, boundaries[1:]):
        segment = tokens[a + 1:b]
        words = [i for i, t in enumerate(segment) if t > PADDING]
        if not words:
            continue
        if a < first:
            problems.append(f"the word of steps {a + 1}..{b} opens before step {first}")
        if any(t <= PADDING for t in segment[words[0]:words[-1] + 1]):
            problems.append(f"padding inside the word of steps {a + 1}..{b}")
        if len(tokenizer.decode([segment[i] for i in words]).split()) != 1:
            problems.append(f"several words in steps {a + 1}..{b}")
    assert not problems, f"{name}: the tokens are not clean: {problems}: {tokens}"


def run_case(name: str, repo: Path, audio: np.ndarray) -> dict:
    info, mimi, lm = load(repo)
    tokenizer = info.get_text_tokenizer()
    stt_config = info.stt_config
    n_prefix, n_suffix, chunk_list = chunks(torch.from_numpy(audio)[None], stt_config)
    # `stt_from_file_pytorch.py` takes `int(n_prefix_chunks / frame_rate)` seconds and the delay
    # off the timings.
    offset_seconds = int(n_prefix / FRAME_RATE) + stt_config["audio_delay_seconds"]

    alignment = lmgen_frame_alignment(lm)
    lmgen_offset = [k - frame for k, frame in enumerate(alignment) if frame is not None]
    assert alignment[0] is None and len(set(lmgen_offset)) == 1, alignment
    shift = ASR_STATE_FRAME_OFFSET - lmgen_offset[0]

    codes, tokens, _ = run_loop(mimi, lm, chunk_list, shift=0)
    mapped_codes, mapped_tokens, mapped_prs = run_loop(mimi, lm, chunk_list, shift=shift)
    assert mapped_prs and all(len(p) == len(lm.extra_heads) > 0 for p in mapped_prs), name
    assert mapped_codes == codes
    assert mapped_tokens != tokens, f"{name}: the frame offset makes no difference"
    delay_steps = int(stt_config["audio_delay_seconds"] * FRAME_RATE)
    check_clean(name, mapped_tokens, tokenizer, delay_steps)
    mapped_words = reference_words(mapped_tokens, tokenizer, offset_seconds)
    assert len(mapped_words) >= 3, f"{name}: too few words: {mapped_words}"
    return {
        "repo": repo.name,
        "stt_config": stt_config,
        "prefix_chunks": n_prefix,
        "suffix_chunks": n_suffix,
        "chunks": len(chunk_list),
        "duration_ms": len(audio) * 1000 // SR,
        "offset_seconds": offset_seconds,
        "mimi_codes": codes,
        "lmgen_frame_at_step": alignment,
        "asr_state_frame_offset": ASR_STATE_FRAME_OFFSET,
        "audio_shift_frames": shift,
        "reference": {
            "text_tokens": tokens,
            "words": reference_words(tokens, tokenizer, offset_seconds),
        },
        "mapped": {
            "text_tokens": mapped_tokens,
            "words": mapped_words,
            "text": " ".join(w["text"] for w in mapped_words),
            "pause_probabilities": mapped_prs,
        },
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny")
    OUT.mkdir(parents=True, exist_ok=True)
    wav_path = OUT / "speech.wav"
    if not wav_path.exists():
        write_wav(wav_path, make_audio())
    # As `stt_from_file_pytorch.py` reads it (`sphn.read`, then the mean of the channels).
    audio, sample_rate = sphn.read(str(wav_path))
    assert sample_rate == SR, "the fixture is at 24 kHz: no resampling"
    audio = audio.mean(axis=0).astype(np.float32)

    reference = {
        "generator": "tools/parity/stt/stt_reference.py",
        "moshi_version": __import__("moshi").__version__,
        "torch_version": torch.__version__,
        "audio": "tests/fixtures/stt_parity/speech.wav",
        "cases": {},
    }
    for name, repo in CASES.items():
        record = run_case(name, root / repo, audio)
        reference["cases"][name] = record
        print(f"{name}: {record['chunks']} chunks, shift {record['audio_shift_frames']}, "
              f"words {record['mapped']['text']!r}")
        print(f"  mapped tokens: {record['mapped']['text_tokens']}")
    (OUT / "reference.json").write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
