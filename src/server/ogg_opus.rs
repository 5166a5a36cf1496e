//! Ogg/Opus pages for the TTS `OggOpus` and `OggOpusMessagePack` formats, byte for byte as
//! moshi-server writes them (its `kaudio::ogg_opus::Encoder`): an `OpusHead` page and an
//! `OpusTags` page first (the header, sent once at the start of a stream), then one page per
//! Opus packet of 960 samples (40 ms at 24 kHz), mono, the `Voip` application, Ogg stream serial
//! 42, granule positions counted at 48 kHz as the Ogg Opus mapping requires.
//!
//! Opus itself comes from libopus through the `opus` crate, the pages from the `ogg` crate; this
//! module only lays out the two header packets and feeds the encoder whole frames.
//!
//! The ASR route's `OggOpus` input goes the other way ([`OggOpusDecoder`], as moshi-server's
//! `kaudio::ogg_opus::Decoder`): Ogg bytes in pieces of any size, each completed page's Opus
//! packets decoded at 24 kHz mono, the two header packets skipped.

use ogg::{PacketWriteEndInfo, PacketWriter};

/// Samples per Opus packet: 40 ms at 24 kHz (an Opus frame size: 120, 240, 480, 960, 1920 or
/// 2880 samples at this rate).
const FRAME: usize = 960;
/// moshi-server's Ogg stream serial number.
const SERIAL: u32 = 42;
/// The audio's rate.
const SAMPLE_RATE: u64 = 24_000;

/// An Ogg/Opus stream being written.
pub(crate) struct OggOpusEncoder {
    encoder: opus::Encoder,
    pages: PacketWriter<'static, Vec<u8>>,
    header: Vec<u8>,
    /// Samples not yet a whole packet.
    pending: Vec<f32>,
    /// Samples encoded so far.
    encoded: u64,
    packet: Vec<u8>,
}

impl OggOpusEncoder {
    pub(crate) fn new() -> Result<OggOpusEncoder, String> {
        let encoder = opus::Encoder::new(
            SAMPLE_RATE as u32,
            opus::Channels::Mono,
            opus::Application::Voip,
        )
        .map_err(|e| format!("could not start the Opus encoder: {e}"))?;
        let mut pages = PacketWriter::new(Vec::new());
        let io = |e: std::io::Error| format!("could not write the Ogg header: {e}");
        pages
            .write_packet(opus_head(), SERIAL, PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        pages
            .write_packet(opus_tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        let header = std::mem::take(pages.inner_mut());
        Ok(OggOpusEncoder {
            encoder,
            pages,
            header,
            pending: Vec::with_capacity(2 * FRAME),
            encoded: 0,
            // libopus's largest packet is 1275 bytes per frame; moshi-server allows more.
            packet: vec![0; 50_000],
        })
    }

    /// The `OpusHead` and `OpusTags` pages, sent before any audio.
    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    /// The pages of the whole packets that `pcm` completes (possibly none: the rest waits for
    /// the next call).
    pub(crate) fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, String> {
        self.pending.extend_from_slice(pcm);
        let mut out = Vec::new();
        let whole = self.pending.len() / FRAME * FRAME;
        for frame in self.pending[..whole].chunks_exact(FRAME) {
            let size = self
                .encoder
                .encode_float(frame, &mut self.packet)
                .map_err(|e| format!("Opus encoding failed: {e}"))?;
            self.encoded += FRAME as u64;
            if size == 0 {
                continue;
            }
            let granule = self.encoded * 48_000 / SAMPLE_RATE;
            self.pages
                .write_packet(
                    self.packet[..size].to_vec(),
                    SERIAL,
                    PacketWriteEndInfo::EndPage,
                    granule,
                )
                .map_err(|e| format!("could not write an Ogg page: {e}"))?;
            out.append(self.pages.inner_mut());
        }
        self.pending.drain(..whole);
        Ok(out)
    }

    /// The last page, which ends the Ogg stream: the samples still waiting, padded with silence
    /// to a whole packet (for a response body, which has an end; the websocket never calls it).
    /// Its granule position counts only the real samples, so that players drop the padding.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, String> {
        // `encode` leaves less than a packet waiting.
        let real = self.pending.len() as u64;
        self.pending.resize(FRAME, 0.0);
        let size = self
            .encoder
            .encode_float(&self.pending[..FRAME], &mut self.packet)
            .map_err(|e| format!("Opus encoding failed: {e}"))?;
        self.encoded += real;
        self.pending.clear();
        let granule = self.encoded * 48_000 / SAMPLE_RATE;
        self.pages
            .write_packet(
                self.packet[..size].to_vec(),
                SERIAL,
                PacketWriteEndInfo::EndStream,
                granule,
            )
            .map_err(|e| format!("could not write an Ogg page: {e}"))?;
        Ok(std::mem::take(self.pages.inner_mut()))
    }
}

/// An Ogg/Opus stream being read, for the ASR route's `OggOpus` messages.
pub(crate) struct OggOpusDecoder {
    /// Bytes of a page not yet complete.
    pending: Vec<u8>,
    packets: ogg::reading::BasePacketReader,
    decoder: opus::Decoder,
    /// Room for the longest Opus packet: 120 ms at 24 kHz.
    pcm: Vec<f32>,
}

/// The fixed part of an Ogg page header.
const PAGE_HEADER: usize = 27;

impl OggOpusDecoder {
    pub(crate) fn new() -> Result<OggOpusDecoder, String> {
        Ok(OggOpusDecoder {
            pending: Vec::new(),
            packets: ogg::reading::BasePacketReader::new(),
            decoder: opus::Decoder::new(SAMPLE_RATE as u32, opus::Channels::Mono)
                .map_err(|e| format!("could not start the Opus decoder: {e}"))?,
            pcm: vec![0.0; 2880],
        })
    }

    /// The samples (24 kHz mono) of the packets that `bytes` completes; the rest of a page
    /// waits for the next call. Bytes that are not an Ogg/Opus stream are an error.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        use ogg::reading::PageParser;
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while self.pending.len() >= PAGE_HEADER {
            let header: [u8; PAGE_HEADER] = self.pending[..PAGE_HEADER]
                .try_into()
                .expect("a whole header");
            let bad = |e: ogg::OggReadError| format!("not an Ogg stream: {e}");
            let (mut parser, segments) = PageParser::new(header).map_err(bad)?;
            if self.pending.len() < PAGE_HEADER + segments {
                break;
            }
            let body =
                parser.parse_segments(self.pending[PAGE_HEADER..PAGE_HEADER + segments].to_vec());
            let end = PAGE_HEADER + segments + body;
            if self.pending.len() < end {
                break;
            }
            let page = parser
                .parse_packet_data(self.pending[PAGE_HEADER + segments..end].to_vec())
                .map_err(bad)?;
            self.pending.drain(..end);
            self.packets.push_page(page).map_err(bad)?;
            while let Some(packet) = self.packets.read_packet() {
                if packet.data.starts_with(b"OpusHead") || packet.data.starts_with(b"OpusTags") {
                    continue;
                }
                let samples = self
                    .decoder
                    .decode_float(&packet.data, &mut self.pcm, false)
                    .map_err(|e| format!("not an Opus packet: {e}"))?;
                out.extend_from_slice(&self.pcm[..samples]);
            }
        }
        Ok(out)
    }
}

/// The identification header (RFC 7845, section 5.1), with moshi-server's values: version 1,
/// one channel, a pre-skip of 3840 samples, 48 kHz input rate, no gain, mapping family 0.
fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(1);
    head.extend_from_slice(&3840u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The comment header (RFC 7845, section 5.2): moshi-server's vendor string, no comments.
fn opus_tags() -> Vec<u8> {
    let vendor = b"KyutaiMoshi";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_reads_our_pages_in_pieces_of_any_size() {
        let mut encoder = OggOpusEncoder::new().unwrap();
        let tone: Vec<f32> = (0..FRAME * 10)
            .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin())
            .collect();
        let stream = [encoder.header().to_vec(), encoder.encode(&tone).unwrap()].concat();
        // Whole, and in pieces of 7 bytes: the same samples, one per encoded sample.
        let whole = OggOpusDecoder::new().unwrap().push(&stream).unwrap();
        assert_eq!(whole.len(), tone.len());
        let mut decoder = OggOpusDecoder::new().unwrap();
        let pieces: Vec<f32> = stream
            .chunks(7)
            .flat_map(|piece| decoder.push(piece).unwrap())
            .collect();
        assert_eq!(pieces, whole);
        // The tone comes back (after Opus's delay of a few ms).
        let energy = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let tail = &whole[FRAME * 2..];
        assert!((energy(tail) - 0.045).abs() < 0.01, "{}", energy(tail));
        // Not Ogg: a clear error.
        let error = OggOpusDecoder::new().unwrap().push(&[0u8; 64]).unwrap_err();
        assert!(error.contains("not an Ogg stream"), "{error}");
    }

    #[test]
    fn the_header_is_two_pages_with_moshi_servers_values() {
        let encoder = OggOpusEncoder::new().unwrap();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(encoder.header().to_vec()));
        let head = reader.read_packet_expected().unwrap();
        assert_eq!(head.stream_serial(), SERIAL);
        assert_eq!(
            head.data,
            [
                b"OpusHead".as_slice(),
                &[1, 1, 0x00, 0x0f, 0x80, 0xbb, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
        let tags = reader.read_packet_expected().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        assert_eq!(&tags.data[12..23], b"KyutaiMoshi");
        assert!(reader.read_packet().unwrap().is_none());
    }

    #[test]
    fn whole_packets_become_pages_and_the_rest_waits() {
        let mut encoder = OggOpusEncoder::new().unwrap();
        let tone: Vec<f32> = (0..1920 * 3)
            .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin())
            .collect();
        // 1920 samples: two packets; 1000 more: one, and 40 wait.
        let first = encoder.encode(&tone[..1920]).unwrap();
        let second = encoder.encode(&tone[1920..2920]).unwrap();
        assert_eq!(encoder.pending.len(), 40);
        let all = [encoder.header().to_vec(), first, second].concat();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(all));
        let mut decoder = opus::Decoder::new(24_000, opus::Channels::Mono).unwrap();
        let mut granules = Vec::new();
        let mut decoded = Vec::new();
        while let Some(packet) = reader.read_packet().unwrap() {
            if packet.data.starts_with(b"Opus") {
                continue;
            }
            granules.push(packet.absgp_page());
            let mut out = vec![0f32; 2880];
            let n = decoder.decode_float(&packet.data, &mut out, false).unwrap();
            decoded.extend_from_slice(&out[..n]);
        }
        assert_eq!(granules, [1920, 3840, 5760], "48 kHz granule positions");
        assert_eq!(decoded.len(), 3 * FRAME);
        // Lossy, but the tone comes back (past the codec's delay).
        let energy = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let ratio = energy(&decoded[960..]) / energy(&tone[960..2880]);
        assert!((0.5..2.0).contains(&ratio), "{ratio}");
    }
}
