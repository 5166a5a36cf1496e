//! The safetensors header checks every downloaded weights or voice file goes through: any bytes
//! give a list of tensors or an error, never a panic, an allocation beyond the input's size or a
//! hang; a file that passes has offsets that tile it exactly.
#![no_main]

use fluent_voice_kyutai::internals::models::safetensors_tensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = safetensors_tensors(data) {
        // A file that passes is at least its 8-byte length prefix, and no tensor can claim more
        // elements than there are bytes after the header (zero-sized tensors aside).
        assert!(data.len() >= 8);
        for (_, shape) in &tensors {
            if shape.contains(&0) {
                continue;
            }
            let elements = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .expect("a shape that passed does not overflow");
            assert!(
                elements <= data.len() * 8,
                "{shape:?} in {} bytes",
                data.len()
            );
        }
    }
});
