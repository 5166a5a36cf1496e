//! Audio input (`src/audio`, symphonia underneath): bytes whose headers lie about sizes, rates or
//! channel counts give an error or some samples, never a panic, a huge allocation or a hang.
#![no_main]

use fluent_voice_kyutai::internals::audio::AudioDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut decoder) =
        AudioDecoder::from_bytes(bytes::Bytes::copy_from_slice(data), Some("wav"))
    else {
        return;
    };
    assert!(decoder.sample_rate() > 0 && decoder.channels() > 0);
    // Input of n bytes cannot hold more than a few packets per byte: a decoder that keeps
    // producing chunks long after is looping.
    for _ in 0..(data.len() * 4 + 64) {
        match decoder.next_chunk() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!(
        "the decoder produced chunks far past the end of {} bytes",
        data.len()
    );
});
