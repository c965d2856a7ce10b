//! The planner: for a text, the cheapest allowed encoding and the segments it is sent in.
//!
//! Limits (TS 23.040 9.2.3.24, TS 23.038 6.1.2): one SMS carries 140 octets of user data, that is 160 GSM septets
//! or 70 UCS-2 units. A concatenated part gives up room to its UDH: 6 octets with an 8-bit reference (153 septets,
//! 67 units), 7 with a 16-bit one (152, 66), and 3 more octets for each national language shift element. An escape
//! sequence or a surrogate pair is never split across parts, so a part may end a unit short. A message has at most
//! 255 parts.

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
            Encoding::Gsm7(_) => {
                out.extend(gsm7::pack(&self.payload, gsm7::fill_bits(self.udh.len())))
            }
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
    /// Characters that no allowed GSM alphabet has, in order of first appearance; empty unless the plan is UCS-2.
    pub ucs2_characters: Vec<char>,
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
    let (chosen, text, replaced) = choose(text, options);
    let mut plan = build(text, chosen, options)?;
    plan.replaced = replaced;
    Ok(plan)
}

/// Counts what [`plan`] would, without building segments: the encoding and the number of parts.
pub fn count(text: &str, options: &Options) -> (Encoding, usize) {
    let (chosen, text, _) = choose(text, options);
    (
        chosen,
        segments_for(chosen, &text, options.reference).unwrap_or(usize::MAX),
    )
}

fn choose<'t>(text: &'t str, options: &Options) -> (Encoding, std::borrow::Cow<'t, str>, usize) {
    if let Some(enc) = best_gsm(text, options) {
        return (enc, text.into(), 0);
    }
    if options.smart {
        let (smart_text, replaced) = smart::apply(text);
        if replaced > 0
            && let Some(enc) = best_gsm(&smart_text, options)
        {
            return (enc, smart_text.into(), replaced);
        }
    }
    (Encoding::Ucs2, text.into(), 0)
}

/// The cheapest GSM encoding for `text`, if there is one that beats or (for the default alphabet) ties UCS-2.
fn best_gsm(text: &str, options: &Options) -> Option<Encoding> {
    let default = Encoding::Gsm7(Charset::DEFAULT);
    let default_segments = segments_for(default, text, options.reference);
    if options.national.is_empty() || default_segments == Some(1) {
        return default_segments.map(|_| default);
    }
    // Fewest parts first; at equal parts, fewest units (the most room left).
    let mut best: Option<((usize, usize), Encoding)> =
        cost(default, text, options.reference).map(|c| (c, default));
    for &lang in &options.national {
        let candidates = [
            Charset::new(Language::Default, lang),
            Charset::new(lang, Language::Default),
            Charset::new(lang, lang),
        ];
        for cs in candidates
            .into_iter()
            .flatten()
            .filter(|cs| !cs.is_default())
        {
            let enc = Encoding::Gsm7(cs);
            if let Some(c) = cost(enc, text, options.reference)
                && best.is_none_or(|(b, _)| c < b)
            {
                best = Some((c, enc));
            }
        }
    }
    let ((n, _), enc) = best?;
    if enc == default {
        return Some(enc);
    }
    match segments_for(Encoding::Ucs2, text, options.reference) {
        Some(u) if u <= n => None,
        _ => Some(enc),
    }
}

/// UDH octets for a part: concatenation (when `multi`) and national shift elements.
fn udh_len(encoding: Encoding, multi: bool, reference: Reference) -> usize {
    let national = match encoding {
        Encoding::Gsm7(cs) => {
            3 * (usize::from(cs.locking() != Language::Default)
                + usize::from(cs.single() != Language::Default))
        }
        Encoding::Ucs2 => 0,
    };
    let concat = match (multi, reference) {
        (false, _) => 0,
        (true, Reference::Eight(_)) => 5,
        (true, Reference::Sixteen(_)) => 6,
    };
    if national + concat == 0 {
        0
    } else {
        1 + national + concat
    }
}

/// Units per character of `text` in `encoding`, or `None` if it cannot write one of them.
fn unit_costs<'a>(encoding: Encoding, text: &'a str) -> impl Iterator<Item = Option<usize>> + 'a {
    text.chars().map(move |c| match encoding {
        Encoding::Gsm7(cs) => cs.encode_char(c).map(Septets::len),
        Encoding::Ucs2 => Some(c.len_utf16()),
    })
}

/// The number of parts `text` needs in `encoding`, or `None` if the encoding cannot write it. Can exceed 255.
fn segments_for(encoding: Encoding, text: &str, reference: Reference) -> Option<usize> {
    cost(encoding, text, reference).map(|(parts, _)| parts)
}

/// Parts and units `text` needs in `encoding`, or `None` if the encoding cannot write it.
fn cost(encoding: Encoding, text: &str, reference: Reference) -> Option<(usize, usize)> {
    let single = encoding.capacity(udh_len(encoding, false, reference));
    let mut total = 0;
    for cost in unit_costs(encoding, text) {
        total += cost?;
    }
    if total <= single {
        return Some((1, total));
    }
    let cap = encoding.capacity(udh_len(encoding, true, reference));
    let (mut parts, mut used) = (1, 0);
    for cost in unit_costs(encoding, text).flatten() {
        if used + cost > cap {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    Some((parts, total))
}

fn build(
    text: std::borrow::Cow<'_, str>,
    encoding: Encoding,
    options: &Options,
) -> Result<Plan, PlanError> {
    let ucs2_characters = match encoding {
        Encoding::Ucs2 => {
            let mut out: Vec<char> = Vec::new();
            for c in text.chars() {
                if Charset::DEFAULT.encode_char(c).is_none() && !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        }
        Encoding::Gsm7(_) => Vec::new(),
    };
    let n = segments_for(encoding, &text, options.reference).unwrap_or(usize::MAX);
    if n > MAX_SEGMENTS {
        return Err(PlanError::TooLong {
            segments: n,
            encoding: encoding.name(),
        });
    }
    let multi = n > 1;
    let capacity = encoding.capacity(udh_len(encoding, multi, options.reference));
    let mut segments: Vec<Segment> = Vec::with_capacity(n);
    let mut current = Segment {
        udh: Vec::new(),
        payload: Vec::with_capacity(capacity * 2),
        units: 0,
        capacity,
    };
    let mut units = 0;
    for c in text.chars() {
        let mut buf = [0u16; 2];
        let (bytes, cost): ([u8; 4], usize) = match encoding {
            Encoding::Gsm7(cs) => match cs.encode_char(c) {
                Some(Septets::One(s)) => ([s, 0, 0, 0], 1),
                Some(Septets::Escaped(s)) => ([gsm7::ESCAPE, s, 0, 0], 2),
                // `choose` picked this charset because it writes every character of this very text.
                None => ([b'?', 0, 0, 0], 1),
            },
            Encoding::Ucs2 => {
                let units = c.encode_utf16(&mut buf);
                let [a, b] = units[0].to_be_bytes();
                let [c2, d] = units.get(1).copied().unwrap_or(0).to_be_bytes();
                ([a, b, c2, d], units.len())
            }
        };
        if current.units + cost > capacity {
            let next = Segment {
                udh: Vec::new(),
                payload: Vec::with_capacity(capacity * 2),
                units: 0,
                capacity,
            };
            segments.push(std::mem::replace(&mut current, next));
        }
        let len = match encoding {
            Encoding::Gsm7(_) => cost,
            Encoding::Ucs2 => cost * 2,
        };
        current.payload.extend_from_slice(&bytes[..len]);
        current.units += cost;
        units += cost;
    }
    segments.push(current);
    let total = segments.len() as u8;
    for (i, seg) in segments.iter_mut().enumerate() {
        let mut udh = Udh::default();
        if multi {
            let (reference, wide) = match options.reference {
                Reference::Eight(r) => (u16::from(r), false),
                Reference::Sixteen(r) => (r, true),
            };
            udh.push_concat(Concat {
                reference,
                wide,
                total,
                seq: (i + 1) as u8,
            });
        }
        if let Encoding::Gsm7(cs) = encoding {
            udh.push_charset(cs);
        }
        if !udh.is_empty() {
            seg.udh = udh.to_bytes();
        }
    }
    let characters = text.chars().count();
    Ok(Plan {
        text: text.into_owned(),
        encoding,
        characters,
        units,
        segments,
        ucs2_characters,
        replaced: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        text: &str,
        options: &Options,
        encoding: &str,
        segments: usize,
        used: usize,
        left: usize,
    ) {
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
        let o16 = Options {
            reference: Reference::Sixteen(0x1234),
            ..Options::default()
        };
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
        assert_eq!(p.ucs2_characters, vec!['ж', '😀']);
    }

    #[test]
    fn at_most_255_parts() {
        let o = Options::default();
        assert_eq!(
            plan(&"a".repeat(153 * 255), &o).unwrap().segments.len(),
            255
        );
        assert_eq!(
            plan(&"a".repeat(153 * 255 + 1), &o),
            Err(PlanError::TooLong {
                segments: 256,
                encoding: "gsm7".into()
            })
        );
    }

    #[test]
    fn national_tables_only_when_allowed_and_cheaper() {
        let text = "Günaydın, nasılsın? Şimdi çıkıyorum.";
        check(text, &Options::default(), "ucs2", 1, 36, 34);
        let tr = Options {
            national: vec![Language::Turkish],
            ..Options::default()
        };
        // It fits one UCS-2 part, so the national table gains nothing and every handset shows UCS-2.
        check(text, &tr, "ucs2", 1, 36, 34);
        let text = &text.repeat(2);
        let p = plan(text, &tr).unwrap();
        assert_eq!(p.encoding.name(), "gsm7-turkish-locking");
        assert_eq!(p.segments[0].udh, vec![0x03, 0x25, 0x01, 0x01]);
        // A short text that fits one UCS-2 part anyway does not need national tables either way; a long one does.
        let long = text.repeat(4);
        let p = plan(&long, &tr).unwrap();
        assert!(
            p.encoding.name().starts_with("gsm7-turkish"),
            "{}",
            p.encoding.name()
        );
        assert!(p.segments.len() < plan(&long, &Options::default()).unwrap().segments.len());
    }

    #[test]
    fn smart_encoding_avoids_ucs2() {
        let text = "It\u{2019}s \u{201C}fine\u{201D} \u{2014} really\u{2026}";
        check(text, &Options::default(), "ucs2", 1, 21, 49);
        let p = plan(
            text,
            &Options {
                smart: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(p.encoding.name(), "gsm7");
        assert_eq!(p.text, "It's \"fine\" - really...");
        assert_eq!(p.replaced, 5);
        // A character with no look-alike still forces UCS-2, and then nothing is replaced.
        let p = plan(
            "\u{201C}Привет\u{201D}",
            &Options {
                smart: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(p.encoding, Encoding::Ucs2);
        assert_eq!(p.replaced, 0);
    }

    #[test]
    fn udh_per_part() {
        let p = plan(
            &"a".repeat(200),
            &Options {
                reference: Reference::Eight(0x2A),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(p.segments[0].udh, vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x01]);
        assert_eq!(p.segments[1].udh, vec![0x05, 0x00, 0x03, 0x2A, 0x02, 0x02]);
        assert_eq!(p.encoding.data_coding(), 0);
    }
}
