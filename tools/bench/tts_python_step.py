#!/usr/bin/env python3
"""Time the Python reference (``moshi`` 0.2.x ``LMGen``) per TTS step on a random model with the
real ``kyutai/tts-1.6b-en_fr`` dimensions, CPU f32, for comparison with
``cargo bench --bench tts_step`` (``tts_step/generator_step``) on the same machine.

    /tmp/pyenv/bin/python tools/bench/tts_python_step.py [threads]

The config is the published one (as in ``benches/tts_step.rs``); weights are random (the
reference's own init). Conditioning: ``control`` "ok", ``cfg`` "2.0", a random voice. Each step
runs the main transformer and the 32-codebook depformer, as a TTS step past the audio delay does.
"""

import sys
import time

import torch
from moshi.conditioners import ConditionAttributes, TensorCondition
from moshi.models import LMGen
from moshi.models.loaders import get_moshi_lm

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg_values = [f"{1.0 + 0.5 * i:.1f}" for i in range(7)]
lm_kwargs = {
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
                                       "possible_values": cfg_values}},
        "control": {"type": "lut", "lut": {"dim": 2048, "n_bins": 1, "tokenizer": "noop",
                                           "possible_values": ["ok"]}},
    },
    "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1,
              "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8,
}
t = time.time()
lm = get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cpu", dtype=torch.float32).eval()
print(f"random model built in {time.time() - t:.1f} s")
voice = torch.randn(1, 5 * 125, 512)
mask = torch.zeros(1, 5 * 125, dtype=torch.bool)
mask[:, :125] = True
attrs = ConditionAttributes(text={"control": "ok", "cfg": "2.0"},
                            tensor={"speaker_wavs": TensorCondition(voice, mask)})
with torch.no_grad():
    ct = lm.condition_provider.prepare_and_provide([attrs])
    gen = LMGen(lm, temp=0.6, temp_text=0.6, condition_tensors=ct)
    none = torch.zeros((1, 0, 1), dtype=torch.long)
    with gen.streaming(1):
        for _ in range(5):
            gen.step(none)
        steps = 10
        t = time.time()
        for _ in range(steps):
            gen.step(none)
        per_step = (time.time() - t) / steps
print(f"python reference: {per_step * 1000:.0f} ms per step ({threads} threads), "
      f"real-time factor {per_step / 0.08:.2f} (LM only)")
