#!/usr/bin/env python3
"""Time the Python reference (``moshi`` 0.2.13, PyTorch, CPU, f32) on the real-size repos built by
``make_real_size.py``, for comparison with ``tools/bench/cli_bench.sh`` and
``cargo bench --bench weights`` on the same files and the same machine.

    HF_HUB_CACHE=/work/bigmodels/hub HF_HUB_OFFLINE=1 \\
        /work/venv-quant/bin/python tools/bench/python_reference.py [stt|tts] [threads]

Loads the model the way its users do (``CheckpointInfo.from_hf_repo`` from the cache, then
``get_mimi`` and ``get_moshi(dtype=torch.float32)``, or ``TTSModel.from_checkpoint_info``) and
reports, as one JSON line:

* ``load_s``: from the start of loading to a model ready to run;
* per 80 ms frame, steady state (median over frames after a warm-up): STT ``mimi_encode_ms``
  and ``transformer_ms`` (``LMModel.forward_text``); TTS ``main_transformer_ms``
  (``forward_text``), ``depformer_ms`` (``depformer_step``: 32 codebooks) and
  ``mimi_decode_ms``;
* ``frame_cpu_ms``, ``load_cpu_s``: the same in CPU time of all threads (unlike wall time, not
  inflated when other processes take the cores);
* ``peak_rss_mb``: the process's peak resident memory.
"""

import json
import os
import resource
import statistics
import sys
import time
import wave
from pathlib import Path

# OpenMP threads that spin while they wait make torch many times slower as soon as other
# processes share the cores (a busy build machine); passive waiting keeps it honest there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from moshi.models import loaders  # noqa: E402

STT_REPO = "kyutai/stt-1b-en_fr-candle"
TTS_REPO = "kyutai/tts-1.6b-en_fr"
VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"
WARMUP = 5


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stt(audio_path: str) -> dict:
    t, c = time.time(), time.process_time()
    info = loaders.CheckpointInfo.from_hf_repo(STT_REPO)
    mimi = info.get_mimi(device="cpu")
    lm = info.get_moshi(device="cpu", dtype=torch.float32).eval()
    load_s = time.time() - t
    load_cpu_s = time.process_time() - c
    with wave.open(audio_path, "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    n_q = lm.num_audio_codebooks
    encode, step, cpu = [], [], []
    text = lm.text_card
    with torch.no_grad(), mimi.streaming(1), lm.streaming(1):
        for k in range(len(pcm) // 1920):
            frame = torch.from_numpy(pcm[k * 1920:(k + 1) * 1920].copy())[None, None]
            t0, c0 = time.time(), time.process_time()
            codes = mimi.encode(frame)
            t1 = time.time()
            seq = torch.cat([torch.tensor([[[text]]]), codes[:, :n_q]], dim=1)
            _, logits = lm.forward_text(seq)
            text = int(logits[0, 0, 0].argmax())
            t2 = time.time()
            encode.append(t1 - t0)
            step.append(t2 - t1)
            cpu.append(time.process_time() - c0)
    enc = statistics.median(encode[WARMUP:]) * 1e3
    tr = statistics.median(step[WARMUP:]) * 1e3
    return {"model": "stt", "load_s": round(load_s, 2), "mimi_encode_ms": round(enc, 1),
            "transformer_ms": round(tr, 1), "frame_ms": round(enc + tr, 1),
            "frame_cpu_ms": round(statistics.mean(cpu[WARMUP:]) * 1e3, 1),
            "load_cpu_s": round(load_cpu_s, 2), "frames": len(step)}


def tts(frames: int = 25) -> dict:
    from huggingface_hub import hf_hub_download
    from moshi.conditioners import ConditionAttributes
    from moshi.models.lm import LMGen
    from moshi.models.tts import TTSModel

    t, c = time.time(), time.process_time()
    info = loaders.CheckpointInfo.from_hf_repo(TTS_REPO)
    model = TTSModel.from_checkpoint_info(info, n_q=32, temp=0.6, device="cpu",
                                          dtype=torch.float32)
    load_s = time.time() - t
    load_cpu_s = time.process_time() - c
    voice = Path(hf_hub_download("kyutai/tts-voices", VOICE + model.voice_suffix))
    attrs: ConditionAttributes = model.make_condition_attributes([voice], cfg_coef=2.0)
    lm = model.lm
    times = {"main": [], "depth": []}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.time()
            out = fn(*args, **kwargs)
            times[name].append(time.time() - t0)
            return out
        return wrapper

    lm.forward_text = timed("main", lm.forward_text)
    with torch.no_grad():
        ct = lm.condition_provider.prepare_and_provide([attrs])
        gen = LMGen(lm, temp=0.6, temp_text=0.6, condition_tensors=ct)
        gen.depformer_step = timed("depth", gen.depformer_step)
        none = torch.zeros((1, 0, 1), dtype=torch.long)
        decode, cpu = [], []
        with gen.streaming(1), model.mimi.streaming(1):
            for _ in range(frames):
                c0 = time.process_time()
                gen.step(none)
                codes = torch.randint(0, 2048, (1, 32, 1))
                t0 = time.time()
                model.mimi.decode(codes)
                decode.append(time.time() - t0)
                cpu.append(time.process_time() - c0)
    main = statistics.median(times["main"][WARMUP:]) * 1e3
    depth = statistics.median(times["depth"][WARMUP:]) * 1e3
    dec = statistics.median(decode[WARMUP:]) * 1e3
    return {"model": "tts", "load_s": round(load_s, 2), "main_transformer_ms": round(main, 1),
            "depformer_ms": round(depth, 1), "mimi_decode_ms": round(dec, 1),
            "frame_ms": round(main + depth + dec, 1),
            "frame_cpu_ms": round(statistics.mean(cpu[WARMUP:]) * 1e3, 1),
            "load_cpu_s": round(load_cpu_s, 2), "frames": frames}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "stt"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    # Random weights can drive activations into denormal numbers, which x86 CPUs compute
    # ~100x slower; trained weights do not. Flushing them to zero (as the Rust side's kernels
    # effectively never meet them) keeps the comparison about the models, not the artefact.
    # KYUTAI_BENCH_DENORMALS=1 keeps them.
    if not os.environ.get("KYUTAI_BENCH_DENORMALS"):
        torch.set_flush_denormal(True)
    if which == "stt":
        audio = sys.argv[3] if len(sys.argv) > 3 else "/work/bigmodels/audio/speech_8s.wav"
        result = stt(audio)
    else:
        result = tts()
    result["threads"] = threads
    result["peak_rss_mb"] = round(peak_rss_mb())
    with open("/proc/loadavg") as f:
        result["loadavg"] = " ".join(f.read().split()[:3])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
