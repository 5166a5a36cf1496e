//! Audio input: decoding every supported container, mixing down, resampling to 24 kHz
//! incrementally, and clear errors for files that are not (whole) audio.

use std::io::Write;

use fluent_voice_kyutai::MoshiError;
use fluent_voice_kyutai::audio::{MonoConverter, wav_bytes};
use fluent_voice_kyutai::internals::audio::{AudioDecoder, StreamResampler, downmix};

const FORMATS: &str = "tests/fixtures/stt_parity/formats";

fn decode_all(decoder: &mut AudioDecoder) -> Vec<f32> {
    let mut all = Vec::new();
    while let Some(chunk) = decoder.next_chunk().unwrap() {
        all.extend(chunk);
    }
    all
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// FLAC, MP3 and OGG/Vorbis (written by libsndfile, `tools/parity/stt/make_audio_fixtures.py`):
/// 0.5 s of 44.1 kHz stereo, 440 Hz at 0.5 left and 660 Hz at 0.25 right.
#[test]
fn flac_mp3_and_ogg_decode_to_the_signal_they_hold() {
    for ext in ["flac", "mp3", "ogg"] {
        let path = std::path::PathBuf::from(format!("{FORMATS}/tone.{ext}"));
        let mut decoder = AudioDecoder::open(&path).unwrap();
        assert_eq!(
            (decoder.sample_rate(), decoder.channels()),
            (44_100, 2),
            "{ext}"
        );
        let samples = decode_all(&mut decoder);
        let frames = samples.len() / 2;
        // MP3 frames pad a little; the others are exact.
        assert!(
            (21_000..=23_500).contains(&frames),
            "{ext}: {frames} frames"
        );
        let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
        let right: Vec<f32> = samples.iter().skip(1).step_by(2).copied().collect();
        let (l, r) = (rms(&left[2000..20000]), rms(&right[2000..20000]));
        assert!((l - 0.3536).abs() < 0.03, "{ext}: left rms {l}");
        assert!((r - 0.1768).abs() < 0.03, "{ext}: right rms {r}");

        // The same file through the converter: mono at 24 kHz, the channels averaged.
        let mut conv = MonoConverter::new(44_100, 2, 24_000).unwrap();
        let mut mono = conv.push(&samples).unwrap();
        mono.extend(conv.finish().unwrap());
        let expected_len = (frames as f64 * 24_000.0 / 44_100.0).round() as usize;
        assert_eq!(mono.len(), expected_len, "{ext}");
        let m = rms(&mono[2000..10000]);
        assert!((m - 0.1976).abs() < 0.02, "{ext}: mono rms {m}");
    }
}

#[test]
fn in_memory_bytes_decode_like_files() {
    let bytes = std::fs::read(format!("{FORMATS}/tone.flac")).unwrap();
    let mut from_file = AudioDecoder::open(format!("{FORMATS}/tone.flac").as_ref()).unwrap();
    // No hint: the format is sniffed from the bytes.
    let mut from_bytes = AudioDecoder::from_bytes(bytes.into(), None).unwrap();
    assert_eq!(decode_all(&mut from_file), decode_all(&mut from_bytes));
}

#[test]
fn wav_int16_and_float_decode_exactly() {
    let samples = [0.0f32, 0.5, -0.5, 0.25, -1.0, 0.75];
    let mut float =
        AudioDecoder::from_bytes(wav_bytes(&samples, 8_000, 3).into(), Some("wav")).unwrap();
    assert_eq!((float.sample_rate(), float.channels()), (8_000, 3));
    assert_eq!(decode_all(&mut float), samples);

    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for v in [0i16, 16_384, -16_384, -32_768] {
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let mut int = AudioDecoder::from_bytes(cursor.into_inner().into(), Some("wav")).unwrap();
    assert_eq!(decode_all(&mut int), vec![0.0, 0.5, -0.5, -1.0]);
}

#[test]
fn six_channels_mix_down_to_their_mean() {
    let frame = [0.6f32, 0.0, 0.0, 0.0, 0.0, 0.0];
    let interleaved: Vec<f32> = frame.iter().cycle().take(6 * 100).copied().collect();
    let mono = downmix(&interleaved, 6);
    assert_eq!(mono.len(), 100);
    assert!(mono.iter().all(|&v| (v - 0.1).abs() < 1e-6));
}

/// 8 kHz telephone audio to 24 kHz: three times the samples, the same sine, in phase (the
/// resampler's own delay is trimmed).
#[test]
fn resampling_keeps_length_pitch_and_phase() {
    let tone = |rate: f64, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / rate).sin()) as f32)
            .collect()
    };
    let input = tone(8_000.0, 8_000);
    let mut r = StreamResampler::new(8_000, 24_000).unwrap();
    let mut out = r.push(&input).unwrap();
    out.extend(r.finish().unwrap());
    assert_eq!(out.len(), 24_000);
    let expected = tone(24_000.0, 24_000);
    let err = out[1000..23000]
        .iter()
        .zip(&expected[1000..23000])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 0.01, "max error {err}");
}

/// Streaming: any chunking of the input gives the same output as one big push.
#[test]
fn resampling_does_not_depend_on_chunk_sizes() {
    let input: Vec<f32> = (0..10_000)
        .map(|i| ((i * 7919) % 2001) as f32 / 2000.0 - 0.5)
        .collect();
    let whole = {
        let mut r = StreamResampler::new(44_100, 24_000).unwrap();
        let mut out = r.push(&input).unwrap();
        out.extend(r.finish().unwrap());
        out
    };
    let mut r = StreamResampler::new(44_100, 24_000).unwrap();
    let mut pieces = Vec::new();
    for chunk in input.chunks(333) {
        pieces.extend(r.push(chunk).unwrap());
    }
    pieces.extend(r.finish().unwrap());
    assert_eq!(pieces, whole);
    assert_eq!(
        whole.len(),
        (10_000.0f64 * 24_000.0 / 44_100.0).round() as usize
    );
}

fn invalid_input(err: MoshiError) -> String {
    match err {
        MoshiError::InvalidInput(m) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn missing_empty_and_non_audio_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A wrong path is an I/O error of kind NotFound, told apart from bad content by its type.
    match AudioDecoder::open(&dir.path().join("nope.wav"))
        .err()
        .unwrap()
    {
        MoshiError::Io { source, path, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(path.ends_with("nope.wav"));
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }

    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let msg = invalid_input(AudioDecoder::open(&empty).err().unwrap());
    assert!(msg.contains("empty"), "{msg}");

    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "Dear diary, today I recorded nothing.\n".repeat(20)).unwrap();
    let msg = invalid_input(AudioDecoder::open(&text).err().unwrap());
    assert!(msg.contains("is not audio"), "{msg}");
}

#[test]
fn a_truncated_wav_is_an_error_not_a_short_transcript() {
    let full = wav_bytes(&vec![0.25; 24_000], 24_000, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.wav");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&full[..full.len() / 2])
        .unwrap();
    let mut decoder = AudioDecoder::open(&path).unwrap();
    let err = loop {
        match decoder.next_chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a truncated file decoded as complete"),
            Err(e) => break e,
        }
    };
    let msg = invalid_input(err);
    assert!(msg.contains("truncated"), "{msg}");
}

/// Found by `fuzz/` (audio_decode): a WAV whose `fmt ` chunk claims 65,280 channels makes
/// symphonia 0.6.1 overflow a u16 and panic. It must be an input error instead.
#[test]
fn a_wav_header_that_crashes_the_parser_is_an_input_error() {
    let path = std::path::Path::new("tests/fixtures/hostile/wav-65280-channels.wav");
    let outcome = AudioDecoder::open(path).and_then(|mut decoder| {
        while decoder.next_chunk()?.is_some() {}
        Ok(())
    });
    let error = outcome.expect_err("a hostile header is rejected");
    assert!(matches!(error, MoshiError::InvalidInput(_)), "{error:?}");
    assert!(
        error.to_string().contains("wav-65280-channels.wav"),
        "{error}"
    );
}
