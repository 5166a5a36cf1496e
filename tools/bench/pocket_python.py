#!/usr/bin/env python3
"""The reference's speed on the real-size models of ``make_pocket_real_size.py``, in process, as
a library user meets it (``pocket-tts`` 4.0.1, its own two threads with one torch thread each,
as the package sets them):

    /work/venv-pocket/bin/python tools/bench/pocket_python.py \\
        --config /work/pocket-real/english_2026-10-local.yaml \\
        --voice /work/pocket-real/repo/languages/english_2026-10/embeddings/alba.safetensors \\
        [--quantize] [--repeat 3]

Prints one JSON object: ``load_s`` (a warm ``TTSModel.load_model``: the second of two, files in
the page cache), ``first_audio_ms`` (from ``generate_audio_stream`` to its first chunk, model and
voice loaded; the fastest of ``--repeat``), ``frames``, ``ms_per_frame`` and ``rtf`` (the whole
``generate_audio`` call over its frames, the fastest of ``--repeat``), ``lm_ms_per_step`` and
``mimi_ms_per_frame`` (time inside the generation thread's flow-LM steps and the decoder
thread's ``decode_from_latent``, per frame, from the last run) and ``peak_rss_mb``
(``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from pocket_tts.models.tts_model import TTSModel

TEXT = ("The quick brown fox jumps over the lazy dog near the quiet river bank. "
        "It was a calm morning.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--quantize", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()

    TTSModel.load_model(config=args.config, quantize=args.quantize)
    t = time.perf_counter()
    model = TTSModel.load_model(config=args.config, quantize=args.quantize)
    load_s = time.perf_counter() - t
    voice = model.get_state_for_audio_prompt(args.voice)

    timings = {"lm": 0.0, "lm_n": 0, "mimi": 0.0, "mimi_n": 0}
    step = model._run_flow_lm_and_increment_step
    decode = model.mimi.decode_from_latent

    def timed_step(*a, **kw):
        t0 = time.perf_counter()
        out = step(*a, **kw)
        if kw.get("backbone_input_latents") is not None:
            timings["lm"] += time.perf_counter() - t0
            timings["lm_n"] += 1
        return out

    def timed_decode(latent, state):
        t0 = time.perf_counter()
        out = decode(latent, state)
        timings["mimi"] += time.perf_counter() - t0
        timings["mimi_n"] += latent.shape[1]  # [B, frames, 32]
        return out

    model._run_flow_lm_and_increment_step = timed_step
    model.mimi.decode_from_latent = timed_decode

    first = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        stream = model.generate_audio_stream(voice, args.text)
        next(stream)
        first.append(time.perf_counter() - t)
        for _ in stream:
            pass
    best, frames = None, 0
    for _ in range(args.repeat):
        for k in timings:
            timings[k] = 0
        t = time.perf_counter()
        audio = model.generate_audio(voice, args.text)
        took = time.perf_counter() - t
        frames = audio.shape[-1] // 1920
        best = took if best is None else min(best, took)
    print(json.dumps({
        "impl": "python pocket-tts 4.0.1",
        "weights": "int8" if args.quantize else "f32",
        "torch": torch.__version__,
        "load_s": round(load_s, 3),
        "first_audio_ms": round(min(first) * 1000, 1),
        "frames": frames,
        "ms_per_frame": round(best * 1000 / frames, 2),
        "rtf": round(frames * 0.08 / best, 2),
        "lm_ms_per_step": round(timings["lm"] * 1000 / max(timings["lm_n"], 1), 2),
        "mimi_ms_per_frame": round(timings["mimi"] * 1000 / max(timings["mimi_n"], 1), 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }))


if __name__ == "__main__":
    main()
