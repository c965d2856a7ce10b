//! Delivery receipts: the de-facto text format that SMSCs put in the `short_message` of a deliver_sm (SMPP 3.4
//! Appendix B), the `receipted_message_id` and `message_state` TLVs, and the message id forms carriers mix up.
//!
//! Reading is lenient: keys in any case, fields missing or in another order, dates with or without seconds,
//! ids in hex or decimal. Writing is strict: the Appendix B layout, 10-digit dates, three-digit counters.

use crate::time::AbsoluteTime;

/// A final or intermediate state of a message (SMPP 3.4 5.2.28, and the `stat:` words of Appendix B).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageState {
    Enroute,
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
    /// A `stat:` word or `message_state` value the specification does not define, kept as received.
    Other(String),
}

impl MessageState {
    /// The state of a `message_state` TLV value.
    pub fn from_tlv(v: u8) -> MessageState {
        match v {
            1 => MessageState::Enroute,
            2 => MessageState::Delivered,
            3 => MessageState::Expired,
            4 => MessageState::Deleted,
            5 => MessageState::Undeliverable,
            6 => MessageState::Accepted,
            7 => MessageState::Unknown,
            8 => MessageState::Rejected,
            other => MessageState::Other(other.to_string()),
        }
    }

    /// The `message_state` TLV value, if the state has one.
    pub fn to_tlv(&self) -> Option<u8> {
        Some(match self {
            MessageState::Enroute => 1,
            MessageState::Delivered => 2,
            MessageState::Expired => 3,
            MessageState::Deleted => 4,
            MessageState::Undeliverable => 5,
            MessageState::Accepted => 6,
            MessageState::Unknown => 7,
            MessageState::Rejected => 8,
            MessageState::Other(_) => return None,
        })
    }

    /// The state of a `stat:` word, in any case; the long forms some SMSCs write (`DELIVERED`, `UNDELIVERABLE`,
    /// ...) are understood too.
    pub fn from_stat(word: &str) -> MessageState {
        match word.trim().to_ascii_uppercase().as_str() {
            "ENROUTE" => MessageState::Enroute,
            "DELIVRD" | "DELIVERED" => MessageState::Delivered,
            "EXPIRED" => MessageState::Expired,
            "DELETED" => MessageState::Deleted,
            "UNDELIV" | "UNDELIVERABLE" => MessageState::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => MessageState::Accepted,
            "UNKNOWN" => MessageState::Unknown,
            "REJECTD" | "REJECTED" => MessageState::Rejected,
            _ => MessageState::Other(word.trim().to_string()),
        }
    }

    /// The seven-letter `stat:` word of Appendix B.
    pub fn stat(&self) -> &str {
        match self {
            MessageState::Enroute => "ENROUTE",
            MessageState::Delivered => "DELIVRD",
            MessageState::Expired => "EXPIRED",
            MessageState::Deleted => "DELETED",
            MessageState::Undeliverable => "UNDELIV",
            MessageState::Accepted => "ACCEPTD",
            MessageState::Unknown => "UNKNOWN",
            MessageState::Rejected => "REJECTD",
            MessageState::Other(s) => s,
        }
    }

    /// Whether the message will change no more.
    pub fn is_final(&self) -> bool {
        !matches!(self, MessageState::Enroute | MessageState::Accepted | MessageState::Unknown)
    }
}

/// A receipt date: `YYMMDDhhmm`, sometimes with seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiptDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl ReceiptDate {
    /// Parses 10 or 12 digits; anything else is `None`.
    pub fn parse(s: &str) -> Option<ReceiptDate> {
        let s = s.trim();
        if !(s.len() == 10 || s.len() == 12) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |i: usize| s[i..i + 2].parse::<u8>().ok();
        let d = ReceiptDate {
            year: 2000 + u16::from(n(0)?),
            month: n(2)?,
            day: n(4)?,
            hour: n(6)?,
            minute: n(8)?,
            second: if s.len() == 12 { n(10)? } else { 0 },
        };
        let valid =
            (1..=12).contains(&d.month) && (1..=31).contains(&d.day) && d.hour < 24 && d.minute < 60 && d.second < 60;
        valid.then_some(d)
    }

    /// Seconds since the Unix epoch, taking the date as UTC.
    pub fn unix_seconds(&self) -> i64 {
        AbsoluteTime {
            year: self.year,
            month: self.month,
            day: self.day,
            hour: self.hour,
            minute: self.minute,
            second: self.second,
            tenths: 0,
            offset_quarters: 0,
        }
        .unix_seconds()
    }

    /// The date of a Unix time (UTC), if it falls in 2000..=2099.
    pub fn from_unix(unix: i64) -> Option<ReceiptDate> {
        AbsoluteTime::from_unix(unix).map(|a| ReceiptDate {
            year: a.year,
            month: a.month,
            day: a.day,
            hour: a.hour,
            minute: a.minute,
            second: a.second,
        })
    }
}

impl std::fmt::Display for ReceiptDate {
    /// `YYMMDDhhmm`, as Appendix B writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}{:02}{:02}{:02}{:02}", self.year % 100, self.month, self.day, self.hour, self.minute)
    }
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message id as the SMSC wrote it.
    pub id: String,
    pub sub: u32,
    pub dlvrd: u32,
    pub submit_date: Option<ReceiptDate>,
    pub done_date: Option<ReceiptDate>,
    pub stat: MessageState,
    /// The network error code, as written (often three digits, sometimes hex).
    pub err: String,
    /// The first characters of the message.
    pub text: String,
}

/// Why a text is not a delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("no id: field")]
    NoId,
    #[error("no stat: field")]
    NoStat,
}

const KEYS: [&str; 8] = ["id", "sub", "dlvrd", "submit date", "done date", "stat", "err", "text"];

impl Receipt {
    /// Reads a receipt text leniently. It needs at least `id:` and `stat:`; the rest defaults to zero or empty.
    pub fn parse(text: &str) -> Result<Receipt, ReceiptError> {
        let lower = text.to_ascii_lowercase();
        // Where each key starts: at the start of the text or after white space, and followed by ':'.
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
        for key in KEYS {
            let mut from = 0;
            while let Some(i) = lower[from..].find(key).map(|i| i + from) {
                let before_ok = i == 0 || lower.as_bytes()[i - 1].is_ascii_whitespace();
                let after = &lower[i + key.len()..];
                let colon = after.len() - after.trim_start_matches(' ').len();
                if before_ok && after[colon..].starts_with(':') && !found.iter().any(|f| f.2 == key) {
                    // "text:" runs to the end, so keys inside it are not keys.
                    if found.iter().any(|f| f.2 == "text" && f.0 < i) {
                        break;
                    }
                    found.push((i, i + key.len() + colon + 1, key));
                    break;
                }
                from = i + key.len();
            }
        }
        found.sort_by_key(|f| f.0);
        // Values run to the next key; `text` runs to the end.
        let value = |key: &str| -> Option<String> {
            let idx = found.iter().position(|f| f.2 == key)?;
            let start = found[idx].1;
            let end = if key == "text" { text.len() } else { found.get(idx + 1).map_or(text.len(), |f| f.0) };
            Some(text.get(start..end).unwrap_or("").trim().to_string())
        };
        let id = value("id").filter(|s| !s.is_empty()).ok_or(ReceiptError::NoId)?;
        let stat = value("stat").ok_or(ReceiptError::NoStat)?;
        let num = |v: Option<String>| v.and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(0);
        Ok(Receipt {
            id,
            sub: num(value("sub")),
            dlvrd: num(value("dlvrd")),
            submit_date: value("submit date").as_deref().and_then(ReceiptDate::parse),
            done_date: value("done date").as_deref().and_then(ReceiptDate::parse),
            stat: MessageState::from_stat(&stat),
            err: value("err").unwrap_or_default(),
            text: value("text").unwrap_or_default(),
        })
    }

    /// Writes the receipt in the Appendix B layout: counters as three digits, dates as `YYMMDDhhmm`, `err` as
    /// three characters (zero-padded), and at most 20 characters of text.
    pub fn format(&self) -> String {
        let date = |d: &Option<ReceiptDate>| d.map(|d| d.to_string()).unwrap_or_else(|| "0000000000".into());
        let text: String = self.text.chars().take(20).collect();
        format!(
            "id:{} sub:{:03} dlvrd:{:03} submit date:{} done date:{} stat:{} err:{:0>3} text:{}",
            self.id,
            self.sub.min(999),
            self.dlvrd.min(999),
            date(&self.submit_date),
            date(&self.done_date),
            self.stat.stat(),
            self.err,
            text
        )
    }
}

/// A message id in the forms a carrier may use for it: SMSCs answer submit_sm with an id in one form and write
/// receipts with it in another (hex against decimal, upper against lower case, with or without leading zeros).
/// Both sides of a match go through this one function.
pub fn id_variants(raw: &str) -> Vec<String> {
    let norm = normalize_id(raw);
    let mut out = vec![norm.clone()];
    let is_dec = !norm.is_empty() && norm.bytes().all(|b| b.is_ascii_digit());
    let is_hex = !norm.is_empty() && norm.bytes().all(|b| b.is_ascii_hexdigit());
    if is_dec && let Ok(v) = norm.parse::<u128>() {
        out.push(normalize_id(&format!("{v:x}")));
    }
    if is_hex && let Ok(v) = u128::from_str_radix(&norm, 16) {
        out.push(v.to_string());
    }
    out.dedup();
    out
}

/// A message id trimmed, in lower case, without leading zeros (but "0" stays "0").
pub fn normalize_id(raw: &str) -> String {
    let lower = raw.trim().trim_matches('\0').to_ascii_lowercase();
    let stripped = lower.trim_start_matches('0');
    if stripped.is_empty() && !lower.is_empty() { "0".into() } else { stripped.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_appendix_b_form() {
        let r = Receipt::parse(
            "id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:Hello world",
        )
        .unwrap();
        assert_eq!(r.id, "0123456789");
        assert_eq!((r.sub, r.dlvrd), (1, 1));
        assert_eq!(r.submit_date.unwrap().minute, 0);
        assert_eq!(r.done_date.unwrap().minute, 1);
        assert_eq!(r.stat, MessageState::Delivered);
        assert_eq!(r.err, "000");
        assert_eq!(r.text, "Hello world");
        assert_eq!(Receipt::parse(&r.format()).unwrap(), r);
    }

    #[test]
    fn lenient() {
        let r = Receipt::parse("ID:A1B2C3 STAT:undeliv ERR:0x1f Done Date:240101120159 Text:id: stat:x").unwrap();
        assert_eq!(r.id, "A1B2C3");
        assert_eq!(r.stat, MessageState::Undeliverable);
        assert_eq!(r.done_date.unwrap().second, 59);
        assert_eq!(r.err, "0x1f");
        assert_eq!(r.text, "id: stat:x");
        assert_eq!(r.sub, 0);
        let r = Receipt::parse("id:1 stat:WEIRD").unwrap();
        assert_eq!(r.stat, MessageState::Other("WEIRD".into()));
        assert_eq!(Receipt::parse("stat:DELIVRD"), Err(ReceiptError::NoId));
        assert_eq!(Receipt::parse("id:5 sub:1"), Err(ReceiptError::NoStat));
        assert_eq!(Receipt::parse(""), Err(ReceiptError::NoId));
    }

    #[test]
    fn writes_strictly() {
        let r = Receipt {
            id: "abc".into(),
            sub: 1,
            dlvrd: 1,
            submit_date: ReceiptDate::parse("2401011200"),
            done_date: ReceiptDate::parse("240101120130"),
            stat: MessageState::Delivered,
            err: "0".into(),
            text: "a long text that goes past twenty".into(),
        };
        assert_eq!(
            r.format(),
            "id:abc sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:a long text that goe"
        );
    }

    #[test]
    fn id_forms_meet() {
        assert_eq!(id_variants("000ABC"), vec!["abc".to_string(), "2748".to_string()]);
        assert!(id_variants("2748").contains(&"abc".to_string()));
        assert_eq!(normalize_id("0000"), "0");
        assert_eq!(id_variants("msg-1"), vec!["msg-1".to_string()]);
    }

    #[test]
    fn states() {
        for v in 1..=8 {
            assert_eq!(MessageState::from_tlv(v).to_tlv(), Some(v));
            assert_eq!(MessageState::from_stat(MessageState::from_tlv(v).stat()), MessageState::from_tlv(v));
        }
    }
}
