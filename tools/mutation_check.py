#!/usr/bin/env python3
"""Mutation checks: break the code on purpose, one way at a time, and show that a test fails.

Each mutation replaces one exact piece of source (it must occur exactly once, or the script
stops: the code moved, update the mutation), runs the tests that should notice, records which
failed, and puts the source back (also on Ctrl-C or an error). A mutation that no test notices
"survives": the script then exits with status 1. The unmutated tests run first, as a baseline:
if they fail, nothing is concluded.

Usage, from anywhere (it builds in the repository's own `target/`)::

    tools/mutation_check.py                 # every mutation
    tools/mutation_check.py --list          # their names
    tools/mutation_check.py prefix cfg      # those whose name contains one of the words
    tools/mutation_check.py --markdown report.md

The mutations are the ones issue 14 ("Parity tests that can fail") asks for, plus a few close
variants. Keep the list in step with the code when the code moves.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: list[str]


MUTATIONS = [
    Mutation(
        "Pocket TTS: the voice state ignored (each chunk starts from an empty state)",
        "src/pocket/model.rs",
        "let mut state = self.flow_lm.state_from_kv(voice.kv.clone()).map_err(fail)?;",
        "let _ = voice;\n        let mut state = self.flow_lm.new_state();",
        ["pocket_parity"],
    ),
    Mutation(
        "Pocket TTS: RoPE pairs not interleaved (half-split rotation)",
        "src/layers/transformer.rs",
        "q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;\n            k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;",
        "q = candle_nn::rotary_emb::rope(&q, cos, sin)?;\n            k = candle_nn::rotary_emb::rope(&k, cos, sin)?;",
        ["pocket_parity"],
    ),
    Mutation(
        "Pocket TTS: the chunk ends one frame early after EOS",
        "src/pocket/model.rs",
        "&& step >= eos + frames_after_eos",
        "&& step + 1 >= eos + frames_after_eos",
        ["pocket_parity"],
    ),
    Mutation(
        "Pocket TTS: no fade-in at the start of a chunk",
        "src/pocket/model.rs",
        "fade_in(&mut audio, self.sample_rate());",
        "let _ = fade_in;",
        ["pocket_parity"],
    ),
    Mutation(
        "Pocket TTS: the noise scaled by temp instead of sqrt(temp)",
        "src/pocket/noise.rs",
        "let std = temperature.max(0.0).sqrt();",
        "let std = temperature.max(0.0);",
        ["pocket_parity"],
    ),
    Mutation(
        "TTS n_q: Mimi decodes the model's codebooks, not the ones generated",
        "src/tts/synth.rs",
        "        mimi.reset_state();\n        let n_q = cfg.dep_q;",
        "        mimi.reset_state();\n        let n_q = cfg.n_q;",
        ["tts_parity"],
    ),
    Mutation(
        "TTS n_q: the codebooks not generated are fed as sampled tokens, not zero tokens",
        "src/tts/generate.rs",
        "if offset < self.delays[q + 1] + self.delay_steps || q >= self.generated {",
        "if offset < self.delays[q + 1] + self.delay_steps {",
        ["tts_parity"],
    ),
    Mutation(
        "TTS n_q: the depformer's schedule cut to n_q steps (the file's stacked weight sets no longer load)",
        "src/tts/config.rs",
        "        self.dep_q = n_q;\n        Ok(self)",
        "        self.dep_q = n_q;\n        self.depformer_schedule.truncate(n_q);\n        Ok(self)",
        ["tts_parity"],
    ),
    Mutation(
        "TTS n_q: kyutai serve ignores --n-q",
        "src/server/config.rs",
        "        models.tts_n_q = self.tts_n_q;\n",
        "",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: OpenAI's voice names not mapped to Kyutai voices",
        "src/server/openai/voices.rs",
        "match TABLE.iter().find(|(openai, _, _)| *openai == name) {",
        "match TABLE.iter().find(|_| false) {",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: `Authorization: Bearer KEY` not accepted",
        "src/server/auth.rs",
        "(None, Some(value)) => value.to_str().ok().and_then(bearer),",
        "(None, Some(_)) => None,",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: full slots answered 503 instead of 429",
        "src/server/openai/error.rs",
        "status: StatusCode::TOO_MANY_REQUESTS,",
        "status: StatusCode::SERVICE_UNAVAILABLE,",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: a hung-up speech body keeps its slot",
        "src/server/visit.rs",
        "            open.dec();\n            drop(slot);",
        "            open.dec();\n            std::mem::forget(slot);",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: verbose_json words start where they end",
        "src/server/openai/transcriptions.rs",
        "\"start\": seconds(w.start_ms)",
        "\"start\": seconds(w.end_ms)",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: streamed transcript deltas lose the space between words",
        "src/server/openai/transcriptions.rs",
        "format!(\" {}\", word.text)\n",
        "word.text.clone()\n",
        ["server_openai"],
    ),
    Mutation(
        "OpenAI routes: FLAC samples scaled differently from WAV's",
        "src/server/audio_out.rs",
        "let ints: Vec<i32> = block.iter().map(|s| i32::from(to_i16(*s))).collect();",
        "let ints: Vec<i32> = block.iter().map(|s| i32::from(to_i16(*s * 0.999))).collect();",
        ["server_openai"],
    ),
    Mutation(
        "the TTS server ignores the temperature it is asked for",
        "src/server/kyutai/tts.rs",
        "builder = builder.temperature(t);",
        "let _ = t;",
        ["server_tts"],
    ),
    Mutation(
        "batched TTS rows all at the first row's position (RoPE)",
        "src/layers/transformer.rs",
        "let steps: Vec<usize> = states.iter().map(|s| s.step).collect();",
        "let steps: Vec<usize> = states.iter().map(|_| states[0].step).collect();",
        ["tts_batch"],
    ),
    Mutation(
        "batched depformer rows all fed the first generation's previous token",
        "src/tts/generate.rs",
        ".flat_map(|(&g, &p)| std::iter::once(p).chain(rows[g].1.map(|_| p)))",
        ".flat_map(|(&g, _)| std::iter::once(prev[0]).chain(rows[g].1.map(|_| prev[0])))",
        ["tts_batch"],
    ),
    Mutation(
        "quantized batched product (q8 tiles): every row of a tile dotted with its first row",
        "src/weights/rows_matmul.rs",
        "[rows[r], rows[r + 1], rows[r + 2], rows[r + 3]],",
        "[rows[r], rows[r], rows[r], rows[r]],",
        ["tts_batch"],
    ),
    Mutation(
        "drop the TTS voice prefix (audio-prefix models, through the builder)",
        "src/tts/builder.rs",
        "conditions.audio_prefix = Some(prefix);",
        "let _ = prefix;",
        ["tts_cfg"],
    ),
    Mutation(
        "CFG 1.0 instead of the coefficient (direct, two-pass CFG)",
        "src/tts/generate.rs",
        "guide(&mut logits, null, *coef);",
        "guide(&mut logits, null, 1.0);",
        ["tts_cfg"],
    ),
    Mutation(
        "CFG 1.0 instead of the coefficient (CFG-distilled models: the `cfg` condition)",
        "src/tts/synth.rs",
        'Some(format!("{cfg_coef:.1}"))',
        'Some("1.0".to_string())',
        ["tts_parity", "tts_cli"],
    ),
    Mutation(
        "feed the STT silence instead of the audio",
        "src/stt/transcriber.rs",
        "let pcm = Tensor::from_slice(&self.frame, (1, 1, FRAME_SAMPLES), &self.device)",
        "let pcm = Tensor::from_slice(&[0f32; FRAME_SAMPLES], (1, 1, FRAME_SAMPLES), &self.device)",
        ["stt_parity", "stt_pipeline", "stt_cli"],
    ),
    Mutation(
        "shift the STT input by one frame (one more frame of silence before it)",
        "src/stt/transcriber.rs",
        "self.feed_silence(self.prefix_samples, &mut words)?;",
        "self.feed_silence(self.prefix_samples + FRAME_SAMPLES, &mut words)?;",
        ["stt_parity", "stt_pipeline", "stt_cli"],
    ),
    Mutation(
        "remove the silence-prefix subtraction from the word times",
        "src/stt/transcriber.rs",
        "(t - self.prefix_seconds).max(0.0)",
        "t.max(0.0)",
        ["stt_parity", "stt_pipeline"],
    ),
    Mutation(
        "subtract the silence prefix twice from the word times",
        "src/stt/transcriber.rs",
        "(t - self.prefix_seconds).max(0.0)",
        "(t - 2.0 * self.prefix_seconds).max(0.0)",
        ["stt_parity", "stt_pipeline"],
    ),
    Mutation(
        "ignore --voice in the CLI",
        "src/bin/kyutai.rs",
        "speaker = speaker.with_voice(voice);",
        "let _ = voice;",
        ["tts_cli"],
    ),
    Mutation(
        "skip the sha256 verification of a downloaded file",
        "src/models/manager.rs",
        "&& !actual.eq_ignore_ascii_case(&remote.etag)",
        "&& actual.is_empty()",
        ["failures", "download"],
    ),
    Mutation(
        "TTS sampling ignores the temperature",
        "src/tts/sampling.rs",
        "let temperature = temperature as f32;",
        "let temperature = 1.0f32;",
        ["tts_parity", "tts_cli"],
    ),
    Mutation(
        "a dropped TTS conversation keeps generating",
        "src/tts/builder.rs",
        "Some(previous) => self.tx.blocking_send(Ok(previous)).is_ok(),",
        "Some(previous) => self.tx.blocking_send(Ok(previous)).is_ok() || true,",
        ["tts_engine"],
    ),
]


def cargo_test(tests: list[str]) -> tuple[bool, list[str], str]:
    """Runs the test binaries; returns (built, failing tests, output)."""
    command = ["nice", "-n", "10", "cargo", "test", "--locked", "--no-fail-fast"]
    for test in tests:
        command += ["--test", test]
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    # One stream, in order: cargo says which binary runs on stderr, the tests report on stdout.
    done = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = done.stdout
    built = "error: could not compile" not in output
    binary = None
    failing = []
    for line in output.splitlines():
        match = re.match(r"\s*Running (?:unittests )?tests/(\w+)\.rs", line)
        if match:
            binary = match.group(1)
        match = re.match(r"test (\S+) \.\.\. FAILED", line)
        if match:
            failing.append(f"{binary}::{match.group(1)}")
    return built, failing, output


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + ".mutation-backup")


def apply(mutation: Mutation) -> None:
    """Writes the mutated source, after a backup copy of the original (see `restore`)."""
    path = ROOT / mutation.file
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: {mutation.old!r} occurs {count} times in "
            f"{mutation.file}, not once: update tools/mutation_check.py"
        )
    shutil.copy2(path, backup_of(path))
    path.write_text(original.replace(mutation.old, mutation.new))


def restore(path: Path) -> None:
    """Puts the backup back by renaming it (which needs no disk space, so it works on a full
    disk too) and marks the file changed now, so that cargo rebuilds what the mutant built."""
    os.replace(backup_of(path), path)
    os.utime(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="words; run the mutations whose name has one")
    parser.add_argument("--list", action="store_true", help="list the mutations")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    selected = [m for m in MUTATIONS if not args.only or any(w in m.name for w in args.only)]
    if args.list:
        for m in selected:
            print(f"{m.name}  [{m.file}; tests: {', '.join(m.tests)}]")
        return 0
    if not selected:
        print("no mutation matches", file=sys.stderr)
        return 2
    # A run killed before it could restore leaves its backup: put it back first.
    for path in sorted({ROOT / m.file for m in MUTATIONS}):
        if backup_of(path).exists():
            print(f"restoring {path.relative_to(ROOT)} left mutated by an interrupted run")
            restore(path)

    if not args.no_baseline:
        tests = sorted({t for m in selected for t in m.tests})
        print(f"baseline: cargo test --test {' --test '.join(tests)}", flush=True)
        built, failing, output = cargo_test(tests)
        if not built or failing:
            print(output[-5000:])
            print(f"the unmutated tests fail ({failing or 'build'}): nothing to conclude")
            return 2

    rows = []
    for mutation in selected:
        print(f"mutation: {mutation.name} ...", flush=True)
        started = time.monotonic()
        apply(mutation)
        try:
            built, failing, output = cargo_test(mutation.tests)
        finally:
            restore(ROOT / mutation.file)
        seconds = time.monotonic() - started
        if not built:
            print(output[-3000:])
            verdict = "DOES NOT BUILD"
        elif failing:
            verdict = "caught"
        else:
            verdict = "SURVIVED"
        rows.append((mutation, verdict, failing, seconds))
        print(f"  {verdict} in {seconds:.0f} s: {', '.join(failing) or '-'}", flush=True)

    lines = [
        "| mutation | file | tests run | verdict | failing tests |",
        "|---|---|---|---|---|",
    ]
    for mutation, verdict, failing, _ in rows:
        lines.append(
            f"| {mutation.name} | `{mutation.file}` | {', '.join(mutation.tests)} | {verdict} | "
            f"{'<br>'.join(f'`{t}`' for t in failing) or '-'} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0 if all(verdict == "caught" for _, verdict, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
