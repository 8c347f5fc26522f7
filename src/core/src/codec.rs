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

/// Decodes hex (either case) or base64 text that must yield `min..=max` bytes (exactly the MAC
/// length for HMACs; a DER range for ECDSA).
pub fn decode_mac(
    encoding: crate::config::Encoding,
    text: &[u8],
    (min, max): (usize, usize),
) -> Option<Vec<u8>> {
    // A bound before decoding: base64 of 72 bytes is 96 chars, hex 144.
    if text.is_empty() || text.len() > max.saturating_mul(2).saturating_add(4) {
        return None;
    }
    let bytes = match encoding {
        crate::config::Encoding::Hex => hex::decode(text).ok()?,
        crate::config::Encoding::Base64 => base64_decode(text)?,
    };
    (min..=max).contains(&bytes.len()).then_some(bytes)
}
