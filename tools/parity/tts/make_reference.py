#!/usr/bin/env python3
"""Record the Python reference (``moshi`` 0.2.x ``TTSModel``) on the tiny TTS repo, for the Rust
parity tests (``tests/tts_parity.rs``, ``tests/tts_cli.rs``, ``tests/tts_provider.rs``).

The tiny repos are the exact bytes the Rust tests publish on the loopback hub
(``tests/support/tiny.rs``); write them first, then run this script from the repository root::

    cargo run --example dump_tiny_repos -- /tmp/tiny
    /work/venv-parity/bin/python tools/parity/tts/make_reference.py /tmp/tiny

(a venv with ``pip install moshi==0.2.13``, which brings ``torch``; moshi 0.2.13 and torch 2.9
were used.)

Each case of ``CASES`` is one setting of the knobs a user has (text, voice, ``cfg`` value of the
CFG-distilled model, temperature, seed). For each, the script follows
``TTSModel.simple_generate`` step by step and writes to ``tests/fixtures/tts_parity/``:

* ``<name>.json``: the settings, the entries of ``prepare_script([text], padding_between=1)``
  (tokens, word, padding), per LM step the sampled text token and the token fed back (after the
  state machine, muxed with the second stream), the frames ``[1 + n_q]`` that leave ``LMGen``
  (text + audio tokens, delays undone), ``end_step``, the text logits of the first steps, and
  the waveform length;
* ``<name>.pcm.f32``: the waveform ``simple_generate`` returns (little-endian f32, 24 kHz mono),
  which the Rust tests compare sample by sample.

Greedy cases (``temp`` 0) need nothing more. Sampled cases need the same random numbers on both
sides, and torch's generator is not the Rust crate's. The reference samples with
``moshi.utils.sampling.sample_token``: ``softmax(logits / temp)``, the ``top_k`` most likely
tokens (``torch.topk``, in decreasing order), then ``multinomial``, which draws one
``Exp(1)`` variable per candidate and picks ``argmax(p / E)`` (the exponential race). The Rust
sampler (``src/tts/sampling.rs``) does the same with its ``Exp(1)`` variables taken from a
splitmix64 stream seeded with the user's seed. This script runs the reference's own
``sample_token`` and ``sample_top_k`` unchanged and replaces only the source of the ``Exp(1)``
variables in ``multinomial`` by that stream (``SeededExponentials``): the mapping between the two
implementations is "the same seed gives the same Exp(1) variables, consumed in the order the
reference draws them" (the text token of a step, then the audio codebooks in order; no draws
for the depformer in the first ``delay_steps`` steps, where the reference skips it).

The tiny random model ends by itself: the state machine forces a new word after
``max_padding`` (8) pads, so every text reaches ``end_step`` and generation stops
``delay_steps + final_padding`` steps later, exactly as in the reference. ``max_gen_length`` is
still capped (``MAX_STEPS``) in both, as a guard; the recorded runs never reach it.
"""

import json
import math
import struct
import sys
from pathlib import Path

import torch
import moshi.utils.sampling as sampling
from moshi.models import loaders
from moshi.models.tts import TTSModel

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "tts_parity"
VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"
OTHER_VOICE = "vctk/p225_023.wav"
MAX_STEPS = 400
LOGIT_STEPS = 3
HELLO = "Hello from Rust."
CASES = {
    "hello": {"text": HELLO},
    "bonjour": {"text": "Bonjour, je m'appelle Léa: (très) près du café."},
    "two_sentences": {"text": "Is it working? Yes, it is working!"},
    "hello_other_voice": {"text": HELLO, "voice": OTHER_VOICE},
    "hello_cfg_3": {"text": HELLO, "cfg": 3.0},
    "hello_temp_0.6_seed_1": {"text": HELLO, "temp": 0.6, "seed": 1},
    "hello_temp_0.6_seed_2": {"text": HELLO, "temp": 0.6, "seed": 2},
    "hello_temp_1.0_seed_1": {"text": HELLO, "temp": 1.0, "seed": 1},
    # Fewer codebooks than the model's (`TTSModel(n_q=...)`, as Kyutai's server runs the 1.6B
    # at 24 of 32): greedy, and sampled (the draws per step follow the codebooks generated).
    "hello_n_q_3": {"text": HELLO, "n_q": 3},
    "hello_temp_0.6_seed_1_n_q_3": {"text": HELLO, "temp": 0.6, "seed": 1, "n_q": 3},
}
DEFAULTS = {"voice": VOICE, "cfg": 2.0, "temp": 0.0, "seed": 0}


class SeededExponentials:
    """The ``Exp(1)`` variables of the Rust sampler: ``-ln(u)`` with ``u`` in ``(0, 1]`` from
    the top 53 bits of a splitmix64 stream seeded with the seed, rounded to f32."""

    MASK = (1 << 64) - 1

    def __init__(self, seed: int):
        self.state = seed & self.MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def next(self) -> float:
        u = ((self.next_u64() >> 11) + 1) * 2.0**-53
        return -math.log(u)

    def multinomial(self, input: torch.Tensor, num_samples: int, replacement=False, *,
                    generator=None) -> torch.Tensor:
        """``moshi.utils.sampling.multinomial`` (one sample, no replacement) with the
        exponential variables taken from this stream, row by row, candidate by candidate."""
        assert num_samples == 1 and not replacement
        input_ = input.reshape(-1, input.shape[-1])
        e = torch.tensor([[self.next() for _ in range(input_.shape[1])]
                          for _ in range(input_.shape[0])], dtype=torch.float32)
        q = input_ / e
        return q.argmax(dim=-1, keepdim=True).reshape(*list(input.shape[:-1]), -1)


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


def decode(tts: TTSModel, result, prefix_frames: int = 0) -> torch.Tensor:
    """The waveform of a `generate` result, as `simple_generate` decodes it."""
    with tts.mimi.streaming(1), torch.no_grad():
        pcms = []
        for frame in result.frames[tts.delay_steps:]:
            pcms.append(torch.clip(tts.mimi.decode(frame[:, 1:, :]), -1, 1))
    pcms = pcms[2:]
    return torch.concat([p[0, 0, :] for p in pcms[prefix_frames:result.end_steps[0]]])


def run(tts: TTSModel, voices: Path, case: dict) -> tuple[dict, torch.Tensor]:
    text, voice, cfg, temp = case["text"], case["voice"], case["cfg"], case["temp"]
    voice_path = voices / (voice + tts.voice_suffix)
    tts.temp = temp
    logits_log: list[list[float]] = []
    forward_text = tts.lm.forward_text

    def logging_forward_text(*args, **kwargs):
        out, text_logits = forward_text(*args, **kwargs)
        if len(logits_log) < LOGIT_STEPS:
            logits_log.append([float(x) for x in text_logits[0, 0, 0]])
        return out, text_logits

    original_multinomial = sampling.multinomial
    try:
        tts.lm.forward_text = logging_forward_text  # LMGen captures the bound method at start.
        sampling.multinomial = SeededExponentials(case["seed"]).multinomial
        entries = tts.prepare_script([text], padding_between=1)
        attributes = tts.make_condition_attributes([voice_path], cfg_coef=cfg)
        result = tts.generate([entries], [attributes])
        del tts.lm.forward_text
        pcm = decode(tts, result)

        # The same through the public entry point (with the same random numbers), to be sure
        # this replica is faithful.
        sampling.multinomial = SeededExponentials(case["seed"]).multinomial
        direct = tts.simple_generate(text, str(voice_path), cfg_coef=cfg, show_progress=False)[0]
        assert torch.equal(direct, pcm), "replica of simple_generate differs"
    finally:
        sampling.multinomial = original_multinomial
        if "forward_text" in tts.lm.__dict__:
            del tts.lm.forward_text

    return {
        **case,
        "entries": [
            {"tokens": e.tokens, "text": e.text, "padding": e.padding} for e in entries
        ],
        "text_tokens": [[int(a), int(b)] for a, b in result.logged_text_tokens[0]],
        "frames": [[int(x) for x in f[0, :, 0]] for f in result.frames],
        "end_step": result.end_steps[0],
        # `TTSResult.all_transcripts`: each word and the step at which it was fed to the model.
        "transcript": [[word, int(step)] for word, step in result.all_transcripts[0]],
        "delay_steps": tts.delay_steps,
        "text_logits_first_steps": logits_log,
        "pcm_samples": int(pcm.shape[0]),
        "max_steps": MAX_STEPS,
    }, pcm


def write_pcm(path: Path, pcm: torch.Tensor) -> None:
    path.write_bytes(struct.pack(f"<{pcm.shape[0]}f", *pcm.tolist()))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny")
    torch.manual_seed(0)
    info = checkpoint(root / "tts")
    lm_n_q = json.loads((root / "tts" / "config.json").read_text())["n_q"]
    models = {}

    def model(n_q: int) -> TTSModel:
        # One model per n_q: `generate` sets `lm.dep_q = n_q` on the model it runs.
        if n_q not in models:
            models[n_q] = TTSModel.from_checkpoint_info(
                info, n_q=n_q, temp=0.0, device="cpu", dtype=torch.float32,
                max_gen_length=MAX_STEPS
            )
        return models[n_q]

    OUT.mkdir(parents=True, exist_ok=True)
    pcms = {}
    for name, settings in CASES.items():
        case = {**DEFAULTS, "n_q": lm_n_q, **settings}
        record, pcm = run(model(case["n_q"]), root / "voices", case)
        assert record["end_step"] is not None, f"{name}: no end_step within {MAX_STEPS} steps"
        assert len(record["text_tokens"]) < MAX_STEPS, f"{name}: hit the step cap"
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        write_pcm(OUT / f"{name}.pcm.f32", pcm)
        pcms[name] = pcm
        print(f"{name}: {len(record['text_tokens'])} steps, end_step {record['end_step']}, "
              f"{pcm.shape[0]} samples, rms {float(pcm.pow(2).mean().sqrt()):.4f}, "
              f"peak {float(pcm.abs().max()):.4f}")
    # Every knob must change the audio, or the tests could not tell the settings apart.
    for name, pcm in pcms.items():
        if name != "hello":
            same = pcm.shape == pcms["hello"].shape and torch.equal(pcm, pcms["hello"])
            assert not same, f"{name} gives the same audio as hello"
    assert not torch.equal(pcms["hello_temp_0.6_seed_1"], pcms["hello_temp_0.6_seed_2"])
    assert not torch.equal(pcms["hello_temp_0.6_seed_1"], pcms["hello_temp_0.6_seed_1_n_q_3"])


if __name__ == "__main__":
    main()
