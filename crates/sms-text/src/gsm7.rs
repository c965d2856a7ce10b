//! GSM 7-bit text: characters to septets under a [`Charset`], septets back to characters, and the packing of
//! septets into octets (3GPP TS 23.038 6.1.2.1) with the fill bits that align them after a UDH (TS 23.040 9.2.3.24).

use crate::tables::Language;

/// The escape septet: the next septet is read from the single-shift (extension) table.
pub const ESCAPE: u8 = 0x1B;

/// A GSM 7-bit character set: a locking-shift table for single septets and a single-shift table reached through
/// [`ESCAPE`]. `Charset::DEFAULT` is the default alphabet with its extension table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Charset {
    /// The language whose locking-shift table replaces the default alphabet. Never `Spanish`, which has none.
    locking: Language,
    /// The language whose single-shift table replaces the extension table.
    single: Language,
}

impl Default for Charset {
    fn default() -> Self {
        Charset::DEFAULT
    }
}

/// How one character is written in a [`Charset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Septets {
    /// One septet from the locking-shift table.
    One(u8),
    /// [`ESCAPE`] then this septet from the single-shift table.
    Escaped(u8),
}

impl Septets {
    /// 1 or 2.
    pub fn len(self) -> usize {
        match self {
            Septets::One(_) => 1,
            Septets::Escaped(_) => 2,
        }
    }

    /// Always false: a character takes at least one septet.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// ASCII fast path of the default alphabet: the septet for each ASCII code, or -1 where the default table does not
/// have it (it may still be in the extension table, which the slow path looks up).
static DEFAULT_ASCII: [i8; 128] = DEFAULT_ASCII_CONST;
const DEFAULT_ASCII_CONST: [i8; 128] = ascii_table();

const fn ascii_table() -> [i8; 128] {
    let mut out = [-1i8; 128];
    let main: &[(u8, u8)] = &[
        (b'@', 0x00),
        (b'$', 0x02),
        (b'\n', 0x0A),
        (b'\r', 0x0D),
        (b'_', 0x11),
        (b' ', 0x20),
        (b'!', 0x21),
        (b'"', 0x22),
        (b'#', 0x23),
        (b'%', 0x25),
        (b'&', 0x26),
        (b'\'', 0x27),
        (b'(', 0x28),
        (b')', 0x29),
        (b'*', 0x2A),
        (b'+', 0x2B),
        (b',', 0x2C),
        (b'-', 0x2D),
        (b'.', 0x2E),
        (b'/', 0x2F),
        (b':', 0x3A),
        (b';', 0x3B),
        (b'<', 0x3C),
        (b'=', 0x3D),
        (b'>', 0x3E),
        (b'?', 0x3F),
    ];
    let mut i = 0;
    while i < main.len() {
        out[main[i].0 as usize] = main[i].1 as i8;
        i += 1;
    }
    let mut c = b'0';
    while c <= b'9' {
        out[c as usize] = c as i8;
        c += 1;
    }
    let mut c = b'A';
    while c <= b'Z' {
        out[c as usize] = c as i8;
        out[(c + 32) as usize] = (c + 32) as i8;
        c += 1;
    }
    out
}

impl Charset {
    /// The default alphabet and its extension table.
    pub const DEFAULT: Charset = Charset { locking: Language::Default, single: Language::Default };

    /// A charset with `locking`'s locking-shift table and `single`'s single-shift table, or `None` when `locking`
    /// has no locking-shift table (Spanish).
    pub fn new(locking: Language, single: Language) -> Option<Charset> {
        locking.has_locking_shift().then_some(Charset { locking, single })
    }

    /// The language of the locking-shift table.
    pub fn locking(self) -> Language {
        self.locking
    }

    /// The language of the single-shift table.
    pub fn single(self) -> Language {
        self.single
    }

    /// Whether this is the plain default alphabet, which needs no UDH information element.
    pub fn is_default(self) -> bool {
        self == Charset::DEFAULT
    }

    /// How `c` is written, or `None` if this charset cannot write it.
    #[inline]
    pub fn encode_char(self, c: char) -> Option<Septets> {
        let cp = u32::from(c);
        // The hot path, kept small enough to inline into every loop: plain ASCII in the default alphabet.
        if cp < 128 && self.is_default() {
            let s = DEFAULT_ASCII[cp as usize];
            if s >= 0 {
                return Some(Septets::One(s as u8));
            }
        }
        self.encode_char_slow(cp)
    }

    #[inline(never)]
    fn encode_char_slow(self, cp: u32) -> Option<Septets> {
        if let Some(s) = lookup(self.locking.locking_reverse(), cp) {
            return Some(Septets::One(s));
        }
        lookup(self.single.single_reverse(), cp).map(Septets::Escaped)
    }

    /// The septets `text` takes, or the first character this charset cannot write.
    pub fn count(self, text: &str) -> Result<usize, char> {
        let mut n = 0;
        for c in text.chars() {
            n += self.encode_char(c).ok_or(c)?.len();
        }
        Ok(n)
    }

    /// `text` as unpacked septets (one a byte), or the first character this charset cannot write.
    pub fn encode(self, text: &str) -> Result<Vec<u8>, char> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.encode_char(c).ok_or(c)? {
                Septets::One(s) => out.push(s),
                Septets::Escaped(s) => out.extend_from_slice(&[ESCAPE, s]),
            }
        }
        Ok(out)
    }

    /// Septets (one a byte; the high bit is ignored) back to text. Never fails: a septet the tables leave
    /// undefined decodes as TS 23.038 asks of a receiver — an undefined single-shift code as the locking-shift
    /// table's character for it, an undefined locking-shift code as U+FFFD — and a trailing lone escape as a space.
    pub fn decode(self, septets: &[u8]) -> String {
        let locking = self.locking.locking_table().unwrap_or(&crate::tables::DEFAULT_LOCKING);
        let single = self.single.single_table();
        let mut out = String::with_capacity(septets.len());
        let mut iter = septets.iter().map(|b| usize::from(b & 0x7F));
        let push = |out: &mut String, cp: u16| {
            out.push(char::from_u32(u32::from(cp)).filter(|_| cp != 0).unwrap_or(char::REPLACEMENT_CHARACTER))
        };
        while let Some(s) = iter.next() {
            if s == usize::from(ESCAPE) {
                match iter.next() {
                    Some(e) if single[e] != 0 => push(&mut out, single[e]),
                    Some(e) => push(&mut out, locking[e]),
                    None => out.push(' '),
                }
            } else {
                push(&mut out, locking[s]);
            }
        }
        out
    }
}

/// Whether every octet of `text` is an ASCII character the default alphabet writes in one septet.
pub(crate) fn is_basic_ascii(text: &str) -> bool {
    text.bytes().all(|b| BASIC_OCTET[usize::from(b)])
}

/// For every octet value, whether it is an ASCII character in the default alphabet; 256 entries, so the lookup
/// needs no bounds check.
static BASIC_OCTET: [bool; 256] = {
    let mut out = [false; 256];
    let mut b = 0;
    while b < 128 {
        out[b] = DEFAULT_ASCII_CONST[b] >= 0;
        b += 1;
    }
    out
};

/// The septet of an octet [`is_basic_ascii`] accepted. In the default alphabet such a character is its own
/// ASCII code but for three; written as a branch-free select so the loops over it vectorize.
#[inline]
pub(crate) fn basic_ascii_septet(b: u8) -> u8 {
    match b {
        b'@' => 0x00,
        b'$' => 0x02,
        b'_' => 0x11,
        other => other,
    }
}

#[inline]
fn lookup(reverse: &[(u16, u8)], cp: u32) -> Option<u8> {
    let cp = u16::try_from(cp).ok()?;
    reverse.binary_search_by_key(&cp, |&(c, _)| c).ok().map(|i| reverse[i].1)
}

/// Packs septets (one a byte) into octets, least significant bit first, after `fill_bits` zero bits (0..=6), as
/// user data after a UDH is packed. The result is `ceil((fill_bits + 7 * n) / 8)` octets.
pub fn pack(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let total_bits = usize::from(fill_bits % 7) + septets.len() * 7;
    let mut out = Vec::with_capacity(total_bits.div_ceil(8));
    let mut acc: u32 = 0;
    let mut bits = u32::from(fill_bits % 7);
    for &s in septets {
        acc |= u32::from(s & 0x7F) << bits;
        bits += 7;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
    out
}

/// Unpacks `count` septets from packed octets that begin with `fill_bits` fill bits. Stops early, without error,
/// where the octets run out.
pub fn unpack(octets: &[u8], count: usize, fill_bits: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    let mut bit = usize::from(fill_bits % 7);
    while out.len() < count {
        let (byte, shift) = (bit / 8, bit % 8);
        let Some(&lo) = octets.get(byte) else { break };
        let mut v = u16::from(lo) >> shift;
        if shift > 1 {
            match octets.get(byte + 1) {
                Some(&hi) => v |= u16::from(hi) << (8 - shift),
                None => break,
            }
        }
        out.push((v & 0x7F) as u8);
        bit += 7;
    }
    out
}

/// The number of septets that packed user data of `octets` octets after `fill_bits` fill bits can hold.
pub fn septets_in(octets: usize, fill_bits: u8) -> usize {
    (octets * 8).saturating_sub(usize::from(fill_bits % 7)) / 7
}

/// The fill bits that align the first septet after a UDH of `udh_len` octets (including its length octet).
pub fn fill_bits(udh_len: usize) -> u8 {
    ((7 - (udh_len * 8) % 7) % 7) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_pack(septets: &[u8], fill: u8, hex_expected: &str) {
        let packed = pack(septets, fill);
        assert_eq!(hex::encode_upper(&packed), hex_expected);
        assert_eq!(unpack(&packed, septets.len(), fill), septets);
    }

    #[test]
    fn packs_hello_as_ts_23_038_shows() {
        // "hellohello" packed, the classic example of TS 23.038 6.1.2.1.1.
        let septets = Charset::DEFAULT.encode("hellohello").unwrap();
        check_pack(&septets, 0, "E8329BFD4697D9EC37");
    }

    #[test]
    fn packs_after_fill_bits() {
        // After a 6-octet UDH, 1 fill bit: "A" is 0x41 shifted left by one.
        check_pack(&[0x41], 1, "82");
        check_pack(&[0x41, 0x42], 1, "8242");
    }

    #[test]
    fn extension_characters_take_two_septets() {
        let cs = Charset::DEFAULT;
        for c in ['€', '[', ']', '{', '}', '\\', '~', '^', '|', '\u{c}'] {
            assert_eq!(cs.encode_char(c).map(Septets::len), Some(2), "{c}");
        }
        assert_eq!(cs.encode("€").unwrap(), vec![0x1B, 0x65]);
        assert_eq!(cs.count("a€b"), Ok(4));
        assert_eq!(cs.count("a✓"), Err('✓'));
    }

    #[test]
    fn default_alphabet_round_trips_every_septet() {
        let cs = Charset::DEFAULT;
        for s in 0u8..128 {
            if s == ESCAPE {
                continue;
            }
            let text = cs.decode(&[s]);
            assert_eq!(cs.encode(&text).unwrap(), vec![s], "septet {s:#04x} -> {text:?}");
        }
    }

    #[test]
    fn national_tables_round_trip() {
        for lang in Language::ALL {
            let single = Charset::new(Language::Default, lang).unwrap();
            for s in 0u8..128 {
                if lang.single_table()[usize::from(s)] != 0 {
                    let text = single.decode(&[ESCAPE, s]);
                    let back = single.encode(&text).unwrap();
                    // A character the locking table also has is written as one septet.
                    assert!(back == vec![ESCAPE, s] || back.len() == 1 || (back[0] == ESCAPE && back[1] < s));
                }
            }
            if let Some(locking) = Charset::new(lang, lang) {
                for s in 0u8..128 {
                    if lang.locking_table().unwrap()[usize::from(s)] != 0 {
                        let text = locking.decode(&[s]);
                        assert_eq!(locking.encode(&text).unwrap(), vec![s], "{lang} {s:#04x}");
                    }
                }
            }
        }
    }

    #[test]
    fn turkish_and_portuguese_characters() {
        let tr = Charset::new(Language::Turkish, Language::Turkish).unwrap();
        assert_eq!(tr.encode("ğış").unwrap(), vec![0x0C, 0x07, 0x1D]);
        let tr_single = Charset::new(Language::Default, Language::Turkish).unwrap();
        assert_eq!(tr_single.encode("ş").unwrap(), vec![ESCAPE, 0x73]);
        let pt = Charset::new(Language::Default, Language::Portuguese).unwrap();
        assert_eq!(pt.encode("ê").unwrap(), vec![ESCAPE, 0x05]);
        assert!(Charset::new(Language::Spanish, Language::Spanish).is_none());
        let es = Charset::new(Language::Default, Language::Spanish).unwrap();
        assert_eq!(es.encode("á").unwrap(), vec![ESCAPE, 0x61]);
    }

    #[test]
    fn basic_ascii_fast_path_agrees_with_the_table() {
        for b in 0u8..=255 {
            let text = [b];
            let Ok(text) = std::str::from_utf8(&text) else { continue };
            let slow = Charset::DEFAULT.encode_char_slow(u32::from(b));
            if is_basic_ascii(text) {
                assert_eq!(slow, Some(Septets::One(basic_ascii_septet(b))), "{b:#04x}");
            } else {
                assert!(!matches!(slow, Some(Septets::One(_))), "{b:#04x}");
            }
        }
    }

    #[test]
    fn decode_never_fails() {
        assert_eq!(Charset::DEFAULT.decode(&[0x1B]), " ");
        // 0x1B 0x41 is undefined in the extension table: the receiver shows the default table's 'A'.
        assert_eq!(Charset::DEFAULT.decode(&[0x1B, 0x41]), "A");
        assert_eq!(Charset::DEFAULT.decode(&[0xC1]), "A");
    }

    #[test]
    fn unpack_stops_where_octets_end() {
        assert_eq!(unpack(&[0xE8], 5, 0), vec![0x68]);
        assert_eq!(unpack(&[], 5, 3), Vec::<u8>::new());
        assert_eq!(septets_in(140, 0), 160);
        assert_eq!(septets_in(134, 1), 153);
        assert_eq!(fill_bits(6), 1);
        assert_eq!(fill_bits(7), 0);
    }
}
