#!/usr/bin/env python3
"""A tiny SentencePiece unigram model with the default ``nmt_nfkc`` normalisation (a precompiled
character map, as most SentencePiece models carry), and its reference encodings, for the
tokenizer parity test (``tests/tokenizer_nfkc.rs``).

Writes ``tests/fixtures/stt_parity/tokenizer_nfkc.model`` and
``tests/fixtures/stt_parity/tokenizer_nfkc_reference.json``. Run by hand::

    /tmp/pyenv/bin/python tools/parity/stt/make_nfkc_spm.py
"""

import io
import json
from pathlib import Path

import sentencepiece as spm

OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "stt_parity"

SENTENCES = [
    "Hello from Rust.",
    "The quick brown fox jumps over the lazy dog.",
    "Speech to text and text to speech, in English and in French.",
    "Bonjour, je m'appelle Léa et j'habite à Paris.",
    "Où est la bibliothèque ? Elle est près du café.",
    "Le garçon a mangé une crème brûlée très sucrée.",
    "We count one, two, three: 1 2 3 4 5 6 7 8 9 0.",
]

CASES = [
    "Hello from Rust.",
    "ＦＵＬＬ ｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３",  # NFKC folds full-width forms
    "the ﬁrst ﬂoor",  # ligatures
    "café vs cafe\u0301",  # precomposed vs combining accent
    "non\u00a0breaking\u2003spaces",
    "① ② ③ and ½",
    "  Où   est\tle café ?  ",
    "日本語 ΕΛΛΗΝΙΚΑ",
    "",
]


def main() -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_writer=model,
        model_type="unigram",
        vocab_size=80,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    data = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=data)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tokenizer_nfkc.model").write_bytes(data)
    cases = []
    for text in CASES:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    ref = {
        "generator": "tools/parity/stt/make_nfkc_spm.py",
        "sentencepiece_version": spm.__version__,
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    (OUT / "tokenizer_nfkc_reference.json").write_text(
        json.dumps(ref, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    print(len(data), "bytes")
    for c in cases:
        print(c)


if __name__ == "__main__":
    main()
