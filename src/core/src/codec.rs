//! Bounded decoders for signature and key text.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

// Senders differ on padding; the bytes are what matter.
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD_ANY_PAD.decode(text).ok()
}

pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes hex (either case) or base64 text that must yield exactly `len` bytes.
pub fn decode_mac(encoding: crate::config::Encoding, text: &[u8], len: usize) -> Option<Vec<u8>> {
    // A bound before decoding: base64 of 64 bytes is 88 chars, hex 128.
    if text.is_empty() || text.len() > 2 * len + 4 {
        return None;
    }
    let bytes = match encoding {
        crate::config::Encoding::Hex => hex::decode(text).ok()?,
        crate::config::Encoding::Base64 => base64_decode(text)?,
    };
    (bytes.len() == len).then_some(bytes)
}
