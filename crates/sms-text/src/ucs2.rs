//! UCS-2 as SMS uses it: UTF-16 big-endian, so characters outside the Basic Multilingual Plane (emoji) take a
//! surrogate pair of two units, which segmentation never splits.

/// `text` as UTF-16 big-endian octets.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// UTF-16 big-endian octets back to text. Never fails: an unpaired surrogate becomes U+FFFD, and so does a trailing
/// odd octet.
pub fn decode(octets: &[u8]) -> String {
    let units = octets.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    let mut out: String = char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
    if octets.len() % 2 == 1 {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_is_a_surrogate_pair() {
        assert_eq!(encode("😀"), vec![0xD8, 0x3D, 0xDE, 0x00]);
        assert_eq!(decode(&[0xD8, 0x3D, 0xDE, 0x00]), "😀");
    }

    #[test]
    fn bad_input_decodes_with_replacement() {
        assert_eq!(decode(&[0xD8, 0x3D]), "\u{FFFD}");
        assert_eq!(decode(&[0x00, 0x41, 0x00]), "A\u{FFFD}");
    }
}
