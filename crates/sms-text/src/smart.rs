//! Smart encoding: Unicode look-alikes that people paste from word processors and phones (curly quotes, long
//! dashes, the ellipsis, exotic spaces) replaced by plain GSM characters, so that one of them does not turn a whole
//! message into UCS-2 and double its cost. Used only when the caller asks for it.

/// The GSM replacement for `c`, if it is a look-alike smsgate knows; `""` for invisible characters that can go.
pub fn replacement(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{2035}' | '\u{02BC}' | '\u{02B9}'
        | '\u{FF07}' | '`' | '\u{00B4}' | '\u{2039}' | '\u{203A}' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{2036}' | '\u{00AB}' | '\u{00BB}'
        | '\u{FF02}' => "\"",
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}' | '\u{2212}' | '\u{FE58}'
        | '\u{FF0D}' | '\u{00AD}' => "-",
        '\u{2026}' => "...",
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\t' => " ",
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => "",
        '\u{2022}' | '\u{2027}' | '\u{00B7}' => "-",
        '\u{2044}' | '\u{2215}' => "/",
        '\u{02C6}' => "^",
        '\u{02DC}' => "~",
        '\u{2028}' | '\u{2029}' => "\n",
        '\u{FF01}' => "!",
        '\u{FF1F}' => "?",
        _ => return None,
    })
}

/// `text` with every known look-alike replaced, and how many characters were replaced.
pub fn apply(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut replaced = 0;
    for c in text.chars() {
        match replacement(c) {
            Some(r) => {
                out.push_str(r);
                replaced += 1;
            }
            None => out.push(c),
        }
    }
    (out, replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_look_alikes() {
        assert_eq!(
            apply("\u{201C}Hi\u{201D} \u{2014} it\u{2019}s\u{00A0}ok\u{2026}"),
            ("\"Hi\" - it's ok...".into(), 6)
        );
        assert_eq!(apply("plain"), ("plain".into(), 0));
    }

    #[test]
    fn every_replacement_is_gsm() {
        for cp in 0..0x10000u32 {
            if let Some(r) = char::from_u32(cp).and_then(replacement) {
                assert!(crate::Charset::DEFAULT.count(r).is_ok(), "U+{cp:04X} -> {r:?}");
            }
        }
    }
}
