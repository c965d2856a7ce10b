//! The planner: for a text, the cheapest allowed encoding and the segments it is sent in.
//!
//! Limits (TS 23.040 9.2.3.24, TS 23.038 6.1.2): one SMS carries 140 octets of user data, that is 160 GSM septets
//! or 70 UCS-2 units. A concatenated part gives up room to its UDH: 6 octets with an 8-bit reference (153 septets,
//! 67 units), 7 with a 16-bit one (152, 66), and 3 more octets for each national language shift element. An escape
//! sequence or a surrogate pair is never split across parts, so a part may end a unit short. A message has at most
//! 255 parts.

use std::borrow::Cow;

use crate::gsm7::{self, Charset, Septets};
use crate::smart;
use crate::tables::Language;
use crate::udh::{Concat, Udh};

/// User data octets in one SMS.
pub const MAX_USER_DATA: usize = 140;
/// Parts in one concatenated message.
pub const MAX_SEGMENTS: usize = 255;

/// What the caller allows the planner to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Languages whose national single-shift and locking-shift tables may be used. Empty by default: many handsets
    /// do not support them.
    pub national: Vec<Language>,
    /// Replace look-alike characters ([`crate::smart`]) where that avoids UCS-2.
    pub smart: bool,
    /// The concatenation reference written into each part's UDH.
    pub reference: Reference,
}

/// The concatenation reference and its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// An 8-bit reference: the common form, 6-octet UDH.
    Eight(u8),
    /// A 16-bit reference: fewer collisions, 7-octet UDH.
    Sixteen(u16),
}

impl Default for Reference {
    fn default() -> Self {
        Reference::Eight(0)
    }
}

/// The encoding a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 7-bit, in the default alphabet or with national shift tables.
    Gsm7(Charset),
    /// UCS-2 (UTF-16BE).
    Ucs2,
}

impl Encoding {
    /// The SMPP `data_coding` for this encoding: 0x00 (SMSC default alphabet) or 0x08 (UCS-2).
    pub fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7(_) => 0x00,
            Encoding::Ucs2 => 0x08,
        }
    }

    /// `"gsm7"`, `"ucs2"`, or for national tables `"gsm7-<language>"` (both shifts), `"gsm7-<language>-locking"`
    /// or `"gsm7-<language>-single"` (one of them), or `"gsm7-<locking language>-<single language>"`.
    pub fn name(self) -> String {
        match self {
            Encoding::Ucs2 => "ucs2".into(),
            Encoding::Gsm7(cs) => match (cs.locking(), cs.single()) {
                (Language::Default, Language::Default) => "gsm7".into(),
                (l, Language::Default) => format!("gsm7-{l}-locking"),
                (Language::Default, s) => format!("gsm7-{s}-single"),
                (l, s) if l == s => format!("gsm7-{l}"),
                (l, s) => format!("gsm7-{l}-{s}"),
            },
        }
    }

    /// Units (septets or UTF-16 units) in one SMS whose UDH is `udh_len` octets long (0 for none).
    pub fn capacity(self, udh_len: usize) -> usize {
        match self {
            Encoding::Gsm7(_) => (MAX_USER_DATA * 8 - udh_len * 8) / 7,
            Encoding::Ucs2 => (MAX_USER_DATA - udh_len) / 2,
        }
    }
}

/// One part of a planned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The UDH octets, its length octet first; empty when the part has none.
    pub udh: Vec<u8>,
    /// The text of this part: unpacked septets (one a byte, escapes included) for GSM 7-bit, UTF-16BE octets for
    /// UCS-2.
    pub payload: Vec<u8>,
    /// Septets or UTF-16 units used.
    pub units: usize,
    /// Septets or UTF-16 units this part could hold.
    pub capacity: usize,
}

impl Segment {
    /// The user data as it goes over the air: the UDH, then septets packed after their fill bits, or UCS-2 octets.
    /// Never longer than 140 octets.
    pub fn user_data(&self, encoding: Encoding) -> Vec<u8> {
        let mut out = self.udh.clone();
        match encoding {
            Encoding::Gsm7(_) => out.extend(gsm7::pack(&self.payload, gsm7::fill_bits(self.udh.len()))),
            Encoding::Ucs2 => out.extend_from_slice(&self.payload),
        }
        out
    }

    /// The short message as SMPP ESMEs usually send it: the UDH, then unpacked septets or UCS-2 octets.
    pub fn short_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.udh.len() + self.payload.len());
        out.extend_from_slice(&self.udh);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// A text ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The text that is sent: the input, or the input after smart replacement.
    pub text: String,
    pub encoding: Encoding,
    /// Unicode scalar values in `text`.
    pub characters: usize,
    /// Septets or UTF-16 units in all parts.
    pub units: usize,
    pub segments: Vec<Segment>,
    /// Characters smart encoding replaced.
    pub replaced: usize,
}

impl Plan {
    /// Units used in the last segment.
    pub fn units_used_in_last_segment(&self) -> usize {
        self.segments.last().map_or(0, |s| s.units)
    }

    /// Units still free in the last segment.
    pub fn units_left_in_last_segment(&self) -> usize {
        self.segments.last().map_or(0, |s| s.capacity - s.units)
    }

    /// The characters that forced UCS-2 — those the GSM default alphabet lacks — in order of first appearance;
    /// empty unless the plan is UCS-2. Computed on request: the planner itself never needs the list.
    pub fn ucs2_characters(&self) -> Vec<char> {
        let mut out: Vec<char> = Vec::new();
        if self.encoding == Encoding::Ucs2 {
            for c in self.text.chars() {
                if Charset::DEFAULT.encode_char(c).is_none() && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

/// Why a text cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The text needs more than [`MAX_SEGMENTS`] parts.
    #[error("text needs {segments} segments in {encoding}; at most 255 are allowed")]
    TooLong { segments: usize, encoding: String },
}

/// Plans `text` under `options`; see the module documentation for the rules.
///
/// The choice: the default GSM alphabet whenever it can write the text, unless a national table the caller
/// allowed needs fewer parts; national tables where they write what the default cannot in fewer parts than
/// UCS-2 (at equal cost UCS-2 wins, as every handset shows it); otherwise UCS-2.
pub fn plan(text: &str, options: &Options) -> Result<Plan, PlanError> {
    let choice = choose(text, options);
    let mut plan = match choice.encoding {
        Encoding::Ucs2 => build_ucs2(choice.text, options.reference)?,
        Encoding::Gsm7(_) if choice.parts > MAX_SEGMENTS => {
            return Err(PlanError::TooLong { segments: choice.parts, encoding: choice.encoding.name() });
        }
        Encoding::Gsm7(cs) => build_gsm(choice.text, cs, choice.parts, choice.basic, options.reference),
    };
    plan.replaced = choice.replaced;
    Ok(plan)
}

/// The text planned in UCS-2 whatever it holds: for a carrier that cannot take it in the GSM alphabet.
pub fn plan_ucs2(text: &str, options: &Options) -> Result<Plan, PlanError> {
    build_ucs2(Cow::Borrowed(text), options.reference)
}

/// Counts what [`plan`] would, without building segments: the encoding and the number of parts (which may
/// exceed 255, where [`plan`] fails).
pub fn count(text: &str, options: &Options) -> (Encoding, usize) {
    let choice = choose(text, options);
    match choice.encoding {
        Encoding::Ucs2 => {
            (Encoding::Ucs2, cost(Encoding::Ucs2, &choice.text, options.reference).map_or(0, |c| c.parts))
        }
        gsm => (gsm, choice.parts),
    }
}

/// What [`choose`] settled on.
struct Choice<'t> {
    encoding: Encoding,
    text: Cow<'t, str>,
    /// Parts, for GSM; for UCS-2 [`build_ucs2`] counts them as it goes.
    parts: usize,
    replaced: usize,
    /// The text is ASCII in the default alphabet (see [`Cost::basic`]).
    basic: bool,
}

/// What a text costs in one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cost {
    /// Parts; may exceed 255.
    parts: usize,
    units: usize,
    /// Every character is ASCII the default alphabet writes in one septet: the fast path of [`build`].
    basic: bool,
}

fn choose<'t>(text: &'t str, options: &Options) -> Choice<'t> {
    if let Some((encoding, c)) = best_gsm(text, options) {
        return Choice { encoding, text: text.into(), parts: c.parts, replaced: 0, basic: c.basic };
    }
    if options.smart {
        let (smart_text, replaced) = smart::apply(text);
        if replaced > 0
            && let Some((encoding, c)) = best_gsm(&smart_text, options)
        {
            return Choice { encoding, text: smart_text.into(), parts: c.parts, replaced, basic: c.basic };
        }
    }
    Choice { encoding: Encoding::Ucs2, text: text.into(), parts: 0, replaced: 0, basic: false }
}

/// The GSM encoding for `text` and its cost, if one should be used: the default alphabet whenever it can write
/// the text, unless an allowed national table needs fewer parts; a national table (fewest parts, then fewest
/// units) only where it needs fewer parts than both the default alphabet and UCS-2.
fn best_gsm(text: &str, options: &Options) -> Option<(Encoding, Cost)> {
    let default = Encoding::Gsm7(Charset::DEFAULT);
    let default_cost = cost(default, text, options.reference);
    if options.national.is_empty() || default_cost.is_some_and(|c| c.parts == 1) {
        return default_cost.map(|c| (default, c));
    }
    let mut national: Option<(Cost, Encoding)> = None;
    for &lang in &options.national {
        let candidates =
            [Charset::new(Language::Default, lang), Charset::new(lang, Language::Default), Charset::new(lang, lang)];
        for cs in candidates.into_iter().flatten().filter(|cs| !cs.is_default()) {
            let enc = Encoding::Gsm7(cs);
            if let Some(c) = cost(enc, text, options.reference)
                && national.is_none_or(|(b, _)| (c.parts, c.units) < (b.parts, b.units))
            {
                national = Some((c, enc));
            }
        }
    }
    match (default_cost, national) {
        (Some(d), Some((n, _))) if n.parts >= d.parts => Some((default, d)),
        (Some(d), None) => Some((default, d)),
        (_, Some((n, enc))) => match cost(Encoding::Ucs2, text, options.reference) {
            Some(u) if u.parts <= n.parts => None,
            _ => Some((enc, n)),
        },
        (None, None) => None,
    }
}

/// UDH octets for a part: concatenation (when `multi`) and national shift elements.
fn udh_len(encoding: Encoding, multi: bool, reference: Reference) -> usize {
    let national = match encoding {
        Encoding::Gsm7(cs) => {
            3 * (usize::from(cs.locking() != Language::Default) + usize::from(cs.single() != Language::Default))
        }
        Encoding::Ucs2 => 0,
    };
    let concat = match (multi, reference) {
        (false, _) => 0,
        (true, Reference::Eight(_)) => 5,
        (true, Reference::Sixteen(_)) => 6,
    };
    if national + concat == 0 { 0 } else { 1 + national + concat }
}

/// Units per character of `text` in `encoding`, or `None` if it cannot write one of them.
fn unit_costs<'a>(encoding: Encoding, text: &'a str) -> impl Iterator<Item = Option<usize>> + 'a {
    text.chars().map(move |c| match encoding {
        Encoding::Gsm7(cs) => cs.encode_char(c).map(Septets::len),
        Encoding::Ucs2 => Some(c.len_utf16()),
    })
}

/// What `text` costs in `encoding`, or `None` if the encoding cannot write it.
fn cost(encoding: Encoding, text: &str, reference: Reference) -> Option<Cost> {
    let single = encoding.capacity(udh_len(encoding, false, reference));
    let multi = encoding.capacity(udh_len(encoding, true, reference));
    // Fast path: ASCII that the default alphabet writes one septet a character, as most traffic is; no escape
    // sequence can straddle a boundary, so the parts follow by division.
    if encoding == Encoding::Gsm7(Charset::DEFAULT) && gsm7::is_basic_ascii(text) {
        let units = text.len();
        let parts = if units <= single { 1 } else { units.div_ceil(multi) };
        return Some(Cost { parts, units, basic: true });
    }
    let mut total = 0;
    for cost in unit_costs(encoding, text) {
        total += cost?;
    }
    if total <= single {
        return Some(Cost { parts: 1, units: total, basic: false });
    }
    let (mut parts, mut used) = (1, 0);
    for cost in unit_costs(encoding, text).flatten() {
        if used + cost > multi {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    Some(Cost { parts, units: total, basic: false })
}

/// Splits `text` into `parts` GSM segments of `cs`, which [`choose`] found writes every character.
fn build_gsm(text: Cow<'_, str>, cs: Charset, parts: usize, basic: bool, reference: Reference) -> Plan {
    let encoding = Encoding::Gsm7(cs);
    let multi = parts > 1;
    let capacity = encoding.capacity(udh_len(encoding, multi, reference));
    let new_segment = || Segment { udh: Vec::new(), payload: Vec::with_capacity(capacity), units: 0, capacity };
    let mut segments: Vec<Segment> = Vec::with_capacity(parts);
    let mut current = new_segment();
    let mut characters = 0;
    let mut units = 0;
    if basic {
        for chunk in text.as_bytes().chunks(capacity.max(1)) {
            if current.units > 0 {
                segments.push(std::mem::replace(&mut current, new_segment()));
            }
            current.payload.extend(chunk.iter().map(|&b| gsm7::basic_ascii_septet(b)));
            current.units = chunk.len();
        }
        characters = text.len();
        units = text.len();
    } else {
        for c in text.chars() {
            // `choose` picked this charset because it writes every character of this very text.
            let (first, second, cost) = match cs.encode_char(c) {
                Some(Septets::One(s)) => (s, 0, 1),
                Some(Septets::Escaped(s)) => (gsm7::ESCAPE, s, 2),
                None => (b'?', 0, 1),
            };
            if current.units + cost > capacity {
                segments.push(std::mem::replace(&mut current, new_segment()));
            }
            current.payload.push(first);
            if cost == 2 {
                current.payload.push(second);
            }
            current.units += cost;
            units += cost;
            characters += 1;
        }
    }
    segments.push(current);
    add_udh(&mut segments, encoding, reference);
    Plan { text: text.into_owned(), encoding, characters, units, segments, replaced: 0 }
}

/// Builds a UCS-2 plan: the text is written once into one buffer; a text that fits one SMS keeps the buffer as its
/// payload, a longer one is cut into parts by walking the UTF-16 units (never between the two halves of a
/// surrogate pair).
fn build_ucs2(text: Cow<'_, str>, reference: Reference) -> Result<Plan, PlanError> {
    let single = Encoding::Ucs2.capacity(0);
    let mut all: Vec<u8> = Vec::with_capacity(text.len() * 2);
    let mut characters = 0;
    for c in text.chars() {
        let cp = u32::from(c);
        if cp < 0x1_0000 {
            all.extend_from_slice(&(cp as u16).to_be_bytes());
        } else {
            // A surrogate pair (RFC 2781 2.1).
            let v = cp - 0x1_0000;
            let [h1, h2] = (0xD800 | (v >> 10) as u16).to_be_bytes();
            let [l1, l2] = (0xDC00 | (v & 0x3FF) as u16).to_be_bytes();
            all.extend_from_slice(&[h1, h2, l1, l2]);
        }
        characters += 1;
    }
    let units = all.len() / 2;
    if units <= single {
        let segments = vec![Segment { udh: Vec::new(), payload: all, units, capacity: single }];
        return Ok(Plan {
            text: text.into_owned(),
            encoding: Encoding::Ucs2,
            characters,
            units,
            segments,
            replaced: 0,
        });
    }
    let multi = Encoding::Ucs2.capacity(udh_len(Encoding::Ucs2, true, reference));
    let mut segments: Vec<Segment> = Vec::new();
    let mut from = 0;
    while from < all.len() {
        let mut to = (from + multi * 2).min(all.len());
        // Do not end a part on a high surrogate: its low half would open the next one.
        if to < all.len() && (0xD8..=0xDB).contains(&all[to - 2]) {
            to -= 2;
        }
        segments.push(Segment {
            udh: Vec::new(),
            payload: all[from..to].to_vec(),
            units: (to - from) / 2,
            capacity: multi,
        });
        from = to;
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(PlanError::TooLong { segments: segments.len(), encoding: Encoding::Ucs2.name() });
    }
    add_udh(&mut segments, Encoding::Ucs2, reference);
    Ok(Plan { text: text.into_owned(), encoding: Encoding::Ucs2, characters, units, segments, replaced: 0 })
}

/// Writes each part's UDH: concatenation when there are several, national shift elements for their charset.
fn add_udh(segments: &mut [Segment], encoding: Encoding, reference: Reference) {
    let multi = segments.len() > 1;
    if !multi && !matches!(encoding, Encoding::Gsm7(cs) if !cs.is_default()) {
        return;
    }
    let total = segments.len() as u8;
    for (seq, seg) in (1..=u8::MAX).zip(segments.iter_mut()) {
        let mut udh = Udh::default();
        if multi {
            let (reference, wide) = match reference {
                Reference::Eight(r) => (u16::from(r), false),
                Reference::Sixteen(r) => (r, true),
            };
            udh.push_concat(Concat { reference, wide, total, seq });
        }
        if let Encoding::Gsm7(cs) = encoding {
            udh.push_charset(cs);
        }
        seg.udh = udh.to_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, options: &Options, encoding: &str, segments: usize, used: usize, left: usize) {
        let p = plan(text, options).unwrap();
        assert_eq!(p.encoding.name(), encoding, "{text:?}");
        assert_eq!(p.segments.len(), segments, "{text:?}");
        assert_eq!(p.units_used_in_last_segment(), used, "{text:?}");
        assert_eq!(p.units_left_in_last_segment(), left, "{text:?}");
        for s in &p.segments {
            assert!(s.user_data(p.encoding).len() <= MAX_USER_DATA);
        }
        assert_eq!(count(text, options), (p.encoding, segments));
    }

    #[test]
    fn limits() {
        let o = Options::default();
        check("", &o, "gsm7", 1, 0, 160);
        check(&"a".repeat(160), &o, "gsm7", 1, 160, 0);
        check(&"a".repeat(161), &o, "gsm7", 2, 8, 145);
        check(&"a".repeat(306), &o, "gsm7", 2, 153, 0);
        check(&"é".repeat(70), &o, "gsm7", 1, 70, 90);
        check(&"ж".repeat(70), &o, "ucs2", 1, 70, 0);
        check(&"ж".repeat(71), &o, "ucs2", 2, 4, 63);
        let o16 = Options { reference: Reference::Sixteen(0x1234), ..Options::default() };
        check(&"a".repeat(161), &o16, "gsm7", 2, 9, 143);
        check(&"ж".repeat(71), &o16, "ucs2", 2, 5, 61);
    }

    #[test]
    fn euro_is_not_split_at_a_boundary() {
        // 152 letters then the euro sign: its two septets would straddle 153.
        let text = format!("{}€{}", "a".repeat(152), "x".repeat(10));
        let p = plan(&text, &Options::default()).unwrap();
        assert_eq!(p.segments[0].units, 152);
        assert_eq!(p.segments[1].payload[..3], [0x1B, 0x65, b'x']);
    }

    #[test]
    fn emoji_is_not_split_at_a_boundary() {
        let text = format!("{}😀{}", "ж".repeat(66), "ж".repeat(4));
        let p = plan(&text, &Options::default()).unwrap();
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[0].units, 66);
        assert_eq!(p.segments[1].units, 6);
        assert_eq!(p.ucs2_characters(), vec!['ж', '😀']);
    }

    #[test]
    fn at_most_255_parts() {
        let o = Options::default();
        assert_eq!(plan(&"a".repeat(153 * 255), &o).unwrap().segments.len(), 255);
        assert_eq!(
            plan(&"a".repeat(153 * 255 + 1), &o),
            Err(PlanError::TooLong { segments: 256, encoding: "gsm7".into() })
        );
        assert_eq!(plan(&"ж".repeat(67 * 255), &o).unwrap().segments.len(), 255);
        assert_eq!(
            plan(&"ж".repeat(67 * 255 + 1), &o),
            Err(PlanError::TooLong { segments: 256, encoding: "ucs2".into() })
        );
        assert_eq!(count(&"ж".repeat(67 * 255 + 1), &o), (Encoding::Ucs2, 256));
    }

    #[test]
    fn national_tables_only_when_allowed_and_cheaper() {
        let text = "Günaydın, nasılsın? Şimdi çıkıyorum.";
        check(text, &Options::default(), "ucs2", 1, 36, 34);
        let tr = Options { national: vec![Language::Turkish], ..Options::default() };
        // It fits one UCS-2 part, so the national table gains nothing and every handset shows UCS-2.
        check(text, &tr, "ucs2", 1, 36, 34);
        let text = &text.repeat(2);
        let p = plan(text, &tr).unwrap();
        assert_eq!(p.encoding.name(), "gsm7-turkish-locking");
        assert_eq!(p.segments[0].udh, vec![0x03, 0x25, 0x01, 0x01]);
        // A short text that fits one UCS-2 part anyway does not need national tables either way; a long one does.
        let long = text.repeat(4);
        let p = plan(&long, &tr).unwrap();
        assert!(p.encoding.name().starts_with("gsm7-turkish"), "{}", p.encoding.name());
        assert!(p.segments.len() < plan(&long, &Options::default()).unwrap().segments.len());
    }

    #[test]
    fn national_tables_never_beat_the_default_alphabet_at_equal_parts() {
        // Found by the fuzzer: a national table with fewer units but the same parts as the default alphabet won
        // over it, then lost to UCS-2 at equal parts, and a GSM text went out as UCS-2.
        let all = Options { national: Language::ALL[1..].to_vec(), ..Options::default() };
        let text = format!("{}€{}", "{".repeat(90), "[".repeat(10));
        let p = plan(&text, &all).unwrap();
        assert_eq!(p.encoding, Encoding::Gsm7(Charset::DEFAULT));
        assert_eq!(count(&text, &all).0, p.encoding);
    }

    #[test]
    fn smart_encoding_avoids_ucs2() {
        let text = "It\u{2019}s \u{201C}fine\u{201D} \u{2014} really\u{2026}";
        check(text, &Options::default(), "ucs2", 1, 21, 49);
        let p = plan(text, &Options { smart: true, ..Options::default() }).unwrap();
        assert_eq!(p.encoding.name(), "gsm7");
        assert_eq!(p.text, "It's \"fine\" - really...");
        assert_eq!(p.replaced, 5);
        // A character with no look-alike still forces UCS-2, and then nothing is replaced.
        let p = plan("\u{201C}Привет\u{201D}", &Options { smart: true, ..Options::default() }).unwrap();
        assert_eq!(p.encoding, Encoding::Ucs2);
        assert_eq!(p.replaced, 0);
    }

    #[test]
    fn udh_per_part() {
        let p = plan(&"a".repeat(200), &Options { reference: Reference::Eight(0x2A), ..Options::default() }).unwrap();
        assert_eq!(p.segments[0].udh, vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x01]);
        assert_eq!(p.segments[1].udh, vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x02]);
        assert_eq!(p.encoding.data_coding(), 0);
    }
}
