//! Tokenizer parity: our pure-Rust SentencePiece reader against Python `sentencepiece` on the
//! tiny fixture model (`tests/fixtures/tiny_spm_reference.json`, written by
//! `tools/fixtures/make_tiny_spm.py`), including accents, non-Latin text and odd whitespace.

use fluent_voice_kyutai::MoshiError;
use fluent_voice_kyutai::internals::{PieceKind, Tokenizer};
use serde_json::Value;

const MODEL: &str = "tests/fixtures/tiny_spm.model";

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/tiny_spm_reference.json")).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn vocabulary_and_special_ids_match_python() {
    let tok = Tokenizer::from_file(MODEL).unwrap();
    let r = reference();
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.unk_id(), 0);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.pad_id(), Some(3));
    for p in r["pieces"].as_array().unwrap() {
        let id = p["id"].as_u64().unwrap() as u32;
        let piece = p["piece"].as_str().unwrap();
        assert_eq!(tok.id_to_piece(id), Some(piece));
        assert_eq!(tok.piece_to_id(piece), Some(id));
        assert_eq!(tok.score(id), Some(p["score"].as_f64().unwrap() as f32));
    }
    assert_eq!(tok.piece_kind(0), Some(PieceKind::Unknown));
    assert_eq!(tok.piece_kind(3), Some(PieceKind::Control));
    assert_eq!(tok.piece_kind(4), Some(PieceKind::Normal));
    assert_eq!(tok.id_to_piece(96), None);
    assert_eq!(tok.piece_to_id("not a piece"), None);
}

#[test]
fn encode_matches_python() {
    let tok = Tokenizer::from_file(MODEL).unwrap();
    for case in reference()["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text);
        assert_eq!(ids, ids_of(&case["ids"]), "encode({text:?})");
        let pieces: Vec<&str> = ids.iter().map(|&i| tok.id_to_piece(i).unwrap()).collect();
        let expected: Vec<&str> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(pieces, expected, "pieces of {text:?}");
    }
}

#[test]
fn decode_matches_python() {
    let tok = Tokenizer::from_file(MODEL).unwrap();
    for case in reference()["cases"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        assert_eq!(
            tok.decode(&ids),
            case["decoded"].as_str().unwrap(),
            "decode of {:?}",
            case["text"]
        );
    }
}

#[test]
fn decode_skips_control_pieces_and_unknown_ids() {
    let tok = Tokenizer::from_file(MODEL).unwrap();
    let ids = tok.encode("the lazy dog");
    let mut with_controls = vec![1, 3];
    with_controls.extend(&ids);
    with_controls.extend([2, 10_000]);
    assert_eq!(tok.decode(&with_controls), "the lazy dog");
    assert_eq!(tok.decode(&[]), "");
}

#[test]
fn a_file_that_is_not_a_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.model");
    std::fs::write(&path, b"this is not a protobuf \xff\xff\xff").unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, MoshiError::InvalidModelFile { .. }), "{err}");
    assert!(err.to_string().contains("SentencePiece"), "{err}");

    let err = Tokenizer::from_file(dir.path().join("missing.model")).unwrap_err();
    assert!(matches!(err, MoshiError::Io { .. }), "{err}");
    assert!(Tokenizer::from_bytes(&[]).is_err());
}
