#!/usr/bin/env python3
"""Reference STT run with the Python ``moshi`` package, for the Rust parity test.

Inputs: the talkative tiny STT repo, dumped from the Rust test builder so that both sides load
identical bytes::

    STT_PARITY_DUMP_DIR=/tmp/stt-talkative cargo test --test stt_parity dump_talkative_repo
    /tmp/pyenv/bin/python tools/parity/stt/stt_reference.py /tmp/stt-talkative

Writes (relative to the repository root):

* ``tests/fixtures/stt_parity/speech.wav`` -- 1.6 s of a synthetic voice-like signal (harmonic
  bursts with pauses), 24 kHz mono 16-bit, deterministic (kept if it exists).
* ``tests/fixtures/stt_parity/reference.json`` -- the text token the model picks at every step
  (greedy), and the words with their timings in milliseconds.

Conventions, those of the Rust ``moshi`` crate's ``asr::State`` (Kyutai's Rust server), which
our pipeline uses:

* the audio is padded with ``audio_silence_prefix_seconds`` of silence before it, and after it
  with zeros up to a whole 1920-sample frame plus ``audio_delay_seconds`` + 1 s (a last
  incomplete frame of that padding is not run);
* Mimi encodes frame by frame (streaming); the LM's step ``k`` sees the text token of step
  ``k - 1`` and the audio codes of frame ``k - 1`` (the text start token and the audio padding
  token at step 0). Python's ``LMGen`` with the published all-zero ``delays`` instead feeds frame
  ``k`` at step ``k`` (and drops frame 0): the two Kyutai implementations are one frame apart, so
  this script calls ``LMModel.forward_text`` directly with the crate's convention;
* words: after ``delay`` steps, tokens other than 0 (end of padding) and 3 (padding) collect
  into a word; a 0 or 3 closes it. A word starts at the time of the last 0 token and ends at
  the next 0 token, or at the current step if another word closes first, or at the last step;
  times are ``(step - delay) / 12.5`` s minus the silence prefix, clamped to ``[0, duration]``.
"""

import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import torch
from moshi.models import loaders

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "stt_parity"
SR = 24000
FRAME = 1920


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
    pcm = np.clip(np.round(sig * 32767), -32768, 32767).astype("<i2")
    return pcm


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    # The same conversion as symphonia's i16 -> f32.
    return data.astype(np.float32) / 32768.0


def main() -> None:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/stt-talkative")
    OUT.mkdir(parents=True, exist_ok=True)
    wav_path = OUT / "speech.wav"
    if not wav_path.exists():
        write_wav(wav_path, make_audio())
    audio = read_wav(wav_path)

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
    tokenizer = info.get_text_tokenizer()
    stt = raw["stt_config"]
    delay = int(stt["audio_delay_seconds"] * 12.5)
    prefix_s = stt["audio_silence_prefix_seconds"]

    prefix = np.zeros(round(prefix_s * SR), dtype=np.float32)
    partial = (FRAME - len(audio) % FRAME) % FRAME
    tail = np.zeros(partial + round((stt["audio_delay_seconds"] + 1.0) * SR), dtype=np.float32)
    # The prefix is fed first and separately in Rust; frames are cut over the whole stream.
    stream = np.concatenate([prefix, audio, tail])
    # Like the Rust transcriber, a last incomplete frame of padding is not run.
    stream = stream[: len(stream) // FRAME * FRAME]
    duration_ms = len(audio) * 1000 // SR

    n_q = lm.num_audio_codebooks
    tokens = []
    words = []
    pending = None  # (text, start seconds)
    word_tokens = []
    unended = False
    last_stop = 0.0

    def ms(t: float) -> int:
        return int(math.floor(max(0.0, t - prefix_s) * 1000.0 + 0.5))

    def close(text: str, start: float, end: float) -> None:
        text = text.strip()
        if not text:
            return
        end_ms = min(ms(end), duration_ms)
        words.append({"text": text, "start_ms": min(ms(start), end_ms), "end_ms": end_ms})

    prev_text = lm.text_card  # the text start token
    prev_codes = None
    with torch.no_grad(), mimi.streaming(1), lm.streaming(1):
        for k in range(len(stream) // FRAME):
            frame = torch.from_numpy(stream[k * FRAME:(k + 1) * FRAME])[None, None]
            codes = mimi.encode(frame)  # [1, n_q, 1]
            if prev_codes is None:
                audio_in = torch.full((1, n_q, 1), lm.card, dtype=torch.long)
            else:
                audio_in = prev_codes[:, :n_q]
            seq = torch.cat([torch.tensor([[[prev_text]]]), audio_in], dim=1)
            _, logits = lm.forward_text(seq)
            tok = int(logits[0, 0, 0].float().argmax())
            tokens.append(tok)
            prev_text, prev_codes = tok, codes
            step = k + 1
            if step >= delay:
                now = (step - delay) / 12.5
                if tok in (0, 3):
                    if word_tokens:
                        if pending is not None:
                            close(pending[0], pending[1], now)
                        pending = (tokenizer.decode(word_tokens), last_stop)
                        word_tokens = []
                        unended = True
                else:
                    word_tokens.append(tok)
                if tok == 0:
                    if unended:
                        unended = False
                        if pending is not None:
                            close(pending[0], pending[1], now)
                            pending = None
                    last_stop = now
        steps = len(stream) // FRAME
    if pending is not None:
        close(pending[0], pending[1], max(0, steps - delay) / 12.5)

    reference = {
        "generator": "tools/parity/stt/stt_reference.py",
        "moshi_version": __import__("moshi").__version__,
        "torch_version": torch.__version__,
        "audio": "tests/fixtures/stt_parity/speech.wav",
        "delay_steps": delay,
        "steps": steps,
        "duration_ms": duration_ms,
        "text_tokens": tokens,
        "text": " ".join(w["text"] for w in words),
        "words": words,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")
    print(f"{steps} steps, {len(words)} words: {reference['text']!r}")
    print(f"tokens: {tokens}")


if __name__ == "__main__":
    main()
