//! The user data header of TS 23.040 9.2.3.24: information elements, of which smsgate writes and reads
//! concatenation (8- and 16-bit reference) and the national language shift elements.

use crate::tables::Language;

/// Concatenated short message, 8-bit reference (TS 23.040 9.2.3.24.1).
pub const IEI_CONCAT_8: u8 = 0x00;
/// Concatenated short message, 16-bit reference (TS 23.040 9.2.3.24.8).
pub const IEI_CONCAT_16: u8 = 0x08;
/// National language single shift (TS 23.040 9.2.3.24.15).
pub const IEI_SINGLE_SHIFT: u8 = 0x24;
/// National language locking shift (TS 23.040 9.2.3.24.16).
pub const IEI_LOCKING_SHIFT: u8 = 0x25;

/// Where one part stands in a concatenated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// The reference shared by all parts; 0..=255 for an 8-bit reference.
    pub reference: u16,
    /// Whether the reference was carried in 16 bits.
    pub wide: bool,
    /// The number of parts, 1..=255.
    pub total: u8,
    /// This part's number, 1..=total.
    pub seq: u8,
}

impl Concat {
    /// Whether the numbers make sense: a total of at least one and a sequence number within it.
    pub fn is_valid(&self) -> bool {
        self.total >= 1 && (1..=self.total).contains(&self.seq) && (self.wide || self.reference <= 255)
    }
}

/// One information element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub id: u8,
    pub data: Vec<u8>,
}

/// A parsed user data header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Udh {
    pub elements: Vec<Element>,
}

/// Why a UDH could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdhError {
    /// The user data is empty, or shorter than the header length octet says.
    #[error("user data header is {declared} octets long but only {available} follow its length octet")]
    Truncated { declared: usize, available: usize },
    /// An information element runs past the end of the header.
    #[error("information element {id:#04x} runs past the end of the user data header")]
    ElementOverrun { id: u8 },
}

impl Udh {
    /// Splits user data that begins with a UDH into the header and the rest.
    pub fn split(user_data: &[u8]) -> Result<(Udh, &[u8]), UdhError> {
        let Some((&len, rest)) = user_data.split_first() else {
            return Err(UdhError::Truncated { declared: 1, available: 0 });
        };
        let len = usize::from(len);
        if rest.len() < len {
            return Err(UdhError::Truncated { declared: len, available: rest.len() });
        }
        let (mut header, body) = rest.split_at(len);
        let mut elements = Vec::new();
        while let [id, ie_len, tail @ ..] = header {
            let ie_len = usize::from(*ie_len);
            if tail.len() < ie_len {
                return Err(UdhError::ElementOverrun { id: *id });
            }
            elements.push(Element { id: *id, data: tail[..ie_len].to_vec() });
            header = &tail[ie_len..];
        }
        if let [id] = header {
            return Err(UdhError::ElementOverrun { id: *id });
        }
        Ok((Udh { elements }, body))
    }

    /// The header as octets, its length octet first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0];
        for e in &self.elements {
            out.push(e.id);
            out.push(e.data.len() as u8);
            out.extend_from_slice(&e.data);
        }
        out[0] = (out.len() - 1) as u8;
        out
    }

    /// The header's length in octets, its length octet included.
    pub fn len(&self) -> usize {
        1 + self.elements.iter().map(|e| 2 + e.data.len()).sum::<usize>()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The concatenation element, if there is a well-formed one (the last one wins, as TS 23.040 asks).
    pub fn concat(&self) -> Option<Concat> {
        self.elements.iter().rev().find_map(|e| match (e.id, e.data.as_slice()) {
            (IEI_CONCAT_8, &[r, total, seq]) => Some(Concat { reference: u16::from(r), wide: false, total, seq }),
            (IEI_CONCAT_16, &[hi, lo, total, seq]) => {
                Some(Concat { reference: u16::from_be_bytes([hi, lo]), wide: true, total, seq })
            }
            _ => None,
        })
    }

    /// The language of the single-shift element, if any.
    pub fn single_shift(&self) -> Option<Language> {
        self.language(IEI_SINGLE_SHIFT)
    }

    /// The language of the locking-shift element, if any.
    pub fn locking_shift(&self) -> Option<Language> {
        self.language(IEI_LOCKING_SHIFT)
    }

    fn language(&self, iei: u8) -> Option<Language> {
        self.elements.iter().rev().find_map(|e| match e.data.as_slice() {
            &[id] if e.id == iei => Language::from_id(id),
            _ => None,
        })
    }

    /// Adds a concatenation element.
    pub fn push_concat(&mut self, c: Concat) {
        if c.wide {
            let [hi, lo] = c.reference.to_be_bytes();
            self.elements.push(Element { id: IEI_CONCAT_16, data: vec![hi, lo, c.total, c.seq] });
        } else {
            self.elements.push(Element { id: IEI_CONCAT_8, data: vec![c.reference as u8, c.total, c.seq] });
        }
    }

    /// Adds the national language shift elements a charset needs (none for the default alphabet).
    pub fn push_charset(&mut self, charset: crate::Charset) {
        if charset.locking() != Language::Default {
            self.elements.push(Element { id: IEI_LOCKING_SHIFT, data: vec![charset.locking().id()] });
        }
        if charset.single() != Language::Default {
            self.elements.push(Element { id: IEI_SINGLE_SHIFT, data: vec![charset.single().id()] });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_concat() {
        let (udh, rest) = Udh::split(&[0x05, 0x00, 0x03, 0x2A, 0x02, 0x01, 0x41]).unwrap();
        assert_eq!(udh.concat(), Some(Concat { reference: 0x2A, wide: false, total: 2, seq: 1 }));
        assert_eq!(rest, &[0x41]);
        assert_eq!(udh.to_bytes(), vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x01]);
        let (udh, _) = Udh::split(&[0x06, 0x08, 0x04, 0x12, 0x34, 0x03, 0x03]).unwrap();
        assert_eq!(udh.concat(), Some(Concat { reference: 0x1234, wide: true, total: 3, seq: 3 }));
    }

    #[test]
    fn rejects_broken_headers() {
        assert!(matches!(Udh::split(&[]), Err(UdhError::Truncated { .. })));
        assert!(matches!(Udh::split(&[0x05, 0x00, 0x03]), Err(UdhError::Truncated { .. })));
        assert_eq!(Udh::split(&[0x03, 0x00, 0x03, 0x01]), Err(UdhError::ElementOverrun { id: 0 }));
        assert_eq!(Udh::split(&[0x01, 0x00]), Err(UdhError::ElementOverrun { id: 0 }));
    }

    #[test]
    fn national_language_elements() {
        let (udh, _) = Udh::split(&[0x06, 0x25, 0x01, 0x01, 0x24, 0x01, 0x03]).unwrap();
        assert_eq!(udh.locking_shift(), Some(Language::Turkish));
        assert_eq!(udh.single_shift(), Some(Language::Portuguese));
    }
}
