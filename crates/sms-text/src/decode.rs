//! Inbound user data back to text: the SMPP `short_message` (or `message_payload`) of a `deliver_sm`, read by its
//! `data_coding` and, when the `esm_class` UDHI bit is set, its user data header.

use crate::udh::{Udh, UdhError};
use crate::{Charset, Language, gsm7, ucs2};

/// The alphabet a `data_coding` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// GSM 7-bit, one septet an octet as SMPP carries it.
    Gsm7,
    /// IA5 / ASCII.
    Ascii,
    /// ISO 8859-1.
    Latin1,
    /// UCS-2 / UTF-16BE.
    Ucs2,
    /// Octets that are not text (8-bit data, or a character set smsgate does not decode).
    Binary,
}

impl Alphabet {
    /// The alphabet of an SMPP 3.4 `data_coding` (5.2.19), including the GSM TS 23.038 coding groups that
    /// carriers pass through (general data coding, message waiting, data coding/message class).
    pub fn from_data_coding(dc: u8) -> Alphabet {
        match dc {
            0x00 => Alphabet::Gsm7,
            0x01 => Alphabet::Ascii,
            0x03 => Alphabet::Latin1,
            0x08 => Alphabet::Ucs2,
            // General data coding (with class or auto-deletion); bit 5 marks compressed text.
            0x10..=0x7F if dc & 0x20 != 0 => Alphabet::Binary,
            0x10..=0x7F => match (dc >> 2) & 0x03 {
                0 => Alphabet::Gsm7,
                2 => Alphabet::Ucs2,
                _ => Alphabet::Binary,
            },
            0xC0..=0xDF => Alphabet::Gsm7,
            0xE0..=0xEF => Alphabet::Ucs2,
            0xF0..=0xFF if dc & 0x04 != 0 => Alphabet::Binary,
            0xF0..=0xFF => Alphabet::Gsm7,
            _ => Alphabet::Binary,
        }
    }
}

/// A decoded short message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The user data header, when the message had one.
    pub udh: Option<Udh>,
    pub alphabet: Alphabet,
    /// The text; for [`Alphabet::Binary`], `None`.
    pub text: Option<String>,
    /// The octets after the UDH.
    pub body: Vec<u8>,
}

/// Decodes an SMPP short message. Fails only when `udhi` is set and the header is malformed.
pub fn decode_short_message(data_coding: u8, udhi: bool, short_message: &[u8]) -> Result<Decoded, UdhError> {
    let (udh, body) = if udhi {
        let (udh, body) = Udh::split(short_message)?;
        (Some(udh), body)
    } else {
        (None, short_message)
    };
    let alphabet = Alphabet::from_data_coding(data_coding);
    let text = match alphabet {
        Alphabet::Gsm7 => {
            let locking = udh.as_ref().and_then(Udh::locking_shift).unwrap_or(Language::Default);
            let single = udh.as_ref().and_then(Udh::single_shift).unwrap_or(Language::Default);
            let cs = Charset::new(locking, single).unwrap_or(Charset::DEFAULT);
            Some(cs.decode(body))
        }
        Alphabet::Ascii => Some(body.iter().map(|&b| char::from(b & 0x7F)).collect()),
        Alphabet::Latin1 => Some(body.iter().map(|&b| char::from(b)).collect()),
        Alphabet::Ucs2 => Some(ucs2::decode(body)),
        Alphabet::Binary => None,
    };
    Ok(Decoded { udh, alphabet, text, body: body.to_vec() })
}

/// Decodes GSM user data as it travels over the air (TS 23.040): `septet_count` septets (the TP-UDL, UDH
/// included) packed into octets, with a UDH when `udhi` is set.
pub fn decode_packed_gsm(udhi: bool, septet_count: usize, user_data: &[u8]) -> Result<Decoded, UdhError> {
    let (udh, fill, skip) = if udhi {
        let (udh, _) = Udh::split(user_data)?;
        let len = udh.len();
        (Some(udh), gsm7::fill_bits(len), (len * 8).div_ceil(7))
    } else {
        (None, 0, 0)
    };
    let header_octets = udh.as_ref().map_or(0, Udh::len);
    let body = gsm7::unpack(user_data.get(header_octets..).unwrap_or(&[]), septet_count.saturating_sub(skip), fill);
    let locking = udh.as_ref().and_then(Udh::locking_shift).unwrap_or(Language::Default);
    let single = udh.as_ref().and_then(Udh::single_shift).unwrap_or(Language::Default);
    let cs = Charset::new(locking, single).unwrap_or(Charset::DEFAULT);
    Ok(Decoded { udh, alphabet: Alphabet::Gsm7, text: Some(cs.decode(&body)), body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_data_coding() {
        let d = decode_short_message(0x00, false, &[0x48, 0x69, 0x1B, 0x65]).unwrap();
        assert_eq!(d.text.as_deref(), Some("Hi€"));
        let d = decode_short_message(0x08, true, &[0x05, 0x00, 0x03, 0x01, 0x02, 0x01, 0x00, 0xE9]).unwrap();
        assert_eq!(d.text.as_deref(), Some("é"));
        assert_eq!(d.udh.unwrap().concat().unwrap().total, 2);
        assert_eq!(decode_short_message(0x03, false, &[0xE9]).unwrap().text.as_deref(), Some("é"));
        assert_eq!(decode_short_message(0x04, false, &[0xE9]).unwrap().text, None);
        assert!(decode_short_message(0x00, true, &[0x09, 0x00]).is_err());
    }

    #[test]
    fn coding_groups() {
        assert_eq!(Alphabet::from_data_coding(0xF0), Alphabet::Gsm7);
        assert_eq!(Alphabet::from_data_coding(0xF4), Alphabet::Binary);
        assert_eq!(Alphabet::from_data_coding(0x18), Alphabet::Ucs2);
        assert_eq!(Alphabet::from_data_coding(0x30), Alphabet::Binary);
    }

    #[test]
    fn packed_with_udh() {
        let seg = crate::plan("hello", &crate::Options::default()).unwrap();
        let _ = seg;
        // UDH 050003010201 then "A" packed after one fill bit.
        let ud = [0x05, 0x00, 0x03, 0x01, 0x02, 0x01, 0x82];
        let d = decode_packed_gsm(true, 8, &ud).unwrap();
        assert_eq!(d.text.as_deref(), Some("A"));
    }
}
