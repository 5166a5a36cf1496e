//! A minimal protobuf reader for SentencePiece `.model` files.
//!
//! Hand-written rather than `prost`: the format needs about fifteen fields of three messages
//! (`ModelProto`, `TrainerSpec`, `NormalizerSpec`), and `prost` would need either `protoc` at
//! build time or hand-maintained derive structs plus two more dependencies. The wire format
//! (varints, length-delimited fields, fixed 32/64-bit values) is small and stable.
//!
//! Field numbers follow `sentencepiece_model.proto` of google/sentencepiece.

/// One field as read from the wire.
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    /// A 64-bit value; no field this crate reads has this type, so it is skipped.
    Fixed64,
    Bytes(&'a [u8]),
}

/// Iterates over the `(field number, value)` pairs of one message.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end of the message"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next field, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            wire => return Err(format!("unsupported wire type {wire} (field {field})")),
        };
        Ok(Some((field, value)))
    }
}

impl Value<'_> {
    pub(crate) fn as_i64(&self) -> Result<i64, String> {
        match self {
            Value::Varint(v) => Ok(*v as i64),
            _ => Err("expected an integer".into()),
        }
    }

    pub(crate) fn as_f32(&self) -> Result<f32, String> {
        match self {
            Value::Fixed32(v) => Ok(f32::from_bits(*v)),
            _ => Err("expected a float".into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> Result<&[u8], String> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err("expected a length-delimited field".into()),
        }
    }

    pub(crate) fn as_str(&self) -> Result<&str, String> {
        std::str::from_utf8(self.as_bytes()?).map_err(|_| "a string field is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // field 1 varint 300, field 2 "hi", field 3 fixed32 1.5f, field 4 fixed64 7
        let mut msg = vec![0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x1d];
        msg.extend_from_slice(&1.5f32.to_le_bytes());
        msg.push(0x21);
        msg.extend_from_slice(&7u64.to_le_bytes());
        let mut r = Reader::new(&msg);
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.as_i64().unwrap()), (1, 300));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.as_str().unwrap()), (2, "hi"));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.as_f32().unwrap()), (3, 1.5));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert!(matches!((f, v), (4, Value::Fixed64)));
        assert!(r.next_field().unwrap().is_none());
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(Reader::new(&[0x08]).next_field().is_err());
        assert!(Reader::new(&[0x12, 5, b'a']).next_field().is_err());
        assert!(Reader::new(&[0x0b]).next_field().is_err()); // wire type 3 (groups)
    }
}
