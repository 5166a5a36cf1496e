#!/usr/bin/env python3
"""Record the reference's *streaming* TTS mode on the tiny TTS repo, for ``tests/tts_parity.rs``.

The streaming mode is the loop of kyutai-labs/delayed-streams-modeling
``scripts/tts_pytorch_streaming.py`` (``TTSGen``): words are appended to the state machine as
they arrive, and after each one the generator steps while more than
``machine.second_stream_ahead`` words are queued (``process``), so it waits for a late word
instead of reaching the end of the text; once the text is complete, ``process_last`` steps until
the queue is empty, then a fixed ``delay_steps + max(delays) + 8`` steps. This script runs that
loop (written again here with the ``moshi`` package's ``LMGen`` and ``TTSModel``, as the script
does) with the words arriving one at a time, greedy, and records:

* ``appended_at_step``: for each entry, the step count at which it was appended, that is how
  many steps ran before the generator had to wait for it (the "late-word waits");
* ``text_tokens``: per step, the sampled text token and the one the state machine fed back;
* ``text_done_step``: the step count when the queue was empty (where the fixed tail starts).

Run it like ``make_reference.py``::

    cargo run --example dump_tiny_repos -- /tmp/tiny
    /work/venv-parity/bin/python tools/parity/tts/make_streaming_reference.py /tmp/tiny
"""

import json
import sys
from pathlib import Path

import torch
from moshi.models.lm import LMGen
from moshi.models.tts import TTSModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import MAX_STEPS, OUT, VOICE, checkpoint  # noqa: E402

TEXT = "Hello from Rust. This is streamed text, one word at a time!"
CFG = 2.0


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny")
    torch.manual_seed(0)
    info = checkpoint(root / "tts")
    n_q = json.loads((root / "tts" / "config.json").read_text())["n_q"]
    tts = TTSModel.from_checkpoint_info(
        info, n_q=n_q, temp=0.0, device="cpu", dtype=torch.float32, max_gen_length=MAX_STEPS
    )
    voice_path = root / "voices" / (VOICE + tts.voice_suffix)
    attributes = [tts.make_condition_attributes([voice_path], cfg_coef=CFG)]
    assert tts.cfg_coef == 1.0, "the tiny model is CFG-distilled: no direct CFG"
    entries = tts.prepare_script([TEXT], padding_between=1)

    # `TTSGen` of tts_pytorch_streaming.py.
    offset = 0
    state = tts.machine.new_state([])
    text_tokens: list[list[int]] = []
    condition_tensors = tts.lm.condition_provider.prepare_and_provide(attributes)

    def on_text_logits_hook(text_logits):
        if tts.padding_bonus:
            text_logits[..., tts.machine.token_ids.pad] += tts.padding_bonus
        return text_logits

    def on_audio_hook(audio_tokens):
        for q in range(audio_tokens.shape[1]):
            delay = tts.lm.delays[q + tts.lm.audio_offset]
            if offset < delay + tts.delay_steps:
                audio_tokens[:, q] = tts.machine.token_ids.zero

    def on_text_hook(tokens):
        out = []
        for token in tokens.tolist():
            fed, _ = tts.machine.process(offset, state, token)
            out.append(fed)
            text_tokens.append([int(token), int(fed)])
        tokens[:] = torch.tensor(out, dtype=torch.long, device=tokens.device)

    tts.lm.dep_q = tts.n_q
    lm_gen = LMGen(
        tts.lm, temp=tts.temp, temp_text=tts.temp, cfg_coef=tts.cfg_coef,
        condition_tensors=condition_tensors, on_text_logits_hook=on_text_logits_hook,
        on_text_hook=on_text_hook, on_audio_hook=on_audio_hook,
        cfg_is_masked_until=None, cfg_is_no_text=True,
    )
    lm_gen.streaming_forever(1)

    def step():
        nonlocal offset
        missing = tts.lm.n_q - tts.lm.dep_q
        tokens = torch.full((1, missing, 1), tts.machine.token_ids.zero, dtype=torch.long)
        with torch.no_grad():
            lm_gen.step(tokens)
        offset += 1

    appended_at = []
    for entry in entries:  # the words arrive one at a time
        state.entries.append(entry)
        appended_at.append(offset)
        while len(state.entries) > tts.machine.second_stream_ahead:  # process()
            step()
    while len(state.entries) > 0 or state.end_step is not None:  # process_last()
        if state.end_step is not None:
            break  # (the script's loop condition; it never holds before the queue is empty)
        step()
    text_done = offset
    for _ in range(tts.delay_steps + max(tts.lm.delays) + 8):
        step()

    record = {
        "generator": "tools/parity/tts/make_streaming_reference.py",
        "text": TEXT, "voice": VOICE, "cfg": CFG, "temp": 0.0, "seed": 0,
        "second_stream_ahead": tts.machine.second_stream_ahead,
        "entries": [{"tokens": e.tokens, "text": e.text, "padding": e.padding} for e in entries],
        "appended_at_step": appended_at,
        "text_done_step": text_done,
        "end_step": state.end_step,
        "text_tokens": text_tokens,
    }
    (OUT / "streaming_hello.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(entries)} entries appended at steps {appended_at}; text done at {text_done}, "
          f"end_step {state.end_step}, {len(text_tokens)} steps")


if __name__ == "__main__":
    main()
