//! Tokenizer parity on a model with the default `nmt_nfkc` normalisation, which SentencePiece
//! stores as a precompiled character map (a double-array trie): full-width forms, ligatures,
//! combining accents, odd spaces and circled digits must normalise as Python `sentencepiece`
//! does. Fixture: `tools/parity/stt/make_nfkc_spm.py`.

use fluent_voice_kyutai::internals::Tokenizer;
use serde_json::Value;

#[test]
fn nfkc_model_encodes_and_decodes_like_python() {
    let tok = Tokenizer::from_file("tests/fixtures/stt_parity/tokenizer_nfkc.model").unwrap();
    let r: Value = serde_json::from_str(include_str!(
        "fixtures/stt_parity/tokenizer_nfkc_reference.json"
    ))
    .unwrap();
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().unwrap());
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text), ids, "encode({text:?})");
        assert_eq!(
            tok.decode(&ids),
            case["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
    }
}
