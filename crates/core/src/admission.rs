//! Admission: the one step every way in (REST now; SMPP and campaigns later) takes before a message is stored. It
//! normalizes the destination to E.164, checks the sender, plans the encoding and segments, and settles when the
//! message is due and when it expires. Opt-out and quiet-hour rules will join it here.

use phonenumber::{Mode, country};

use crate::message::Timestamp;
use crate::status::Status;

/// What an account may send, and how numbers are read.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The region a national number (no `+`) is read in; `None` accepts only international numbers.
    pub default_region: Option<country::Id>,
    /// Segments one message may take (at most 255).
    pub max_segments: usize,
    /// How texts are planned: national tables allowed, smart encoding.
    pub plan: sms_text::Options,
    /// The validity a message gets when the request names none.
    pub default_validity_secs: i64,
    /// The longest validity a request may ask for.
    pub max_validity_secs: i64,
    /// How far ahead `send_at` may be.
    pub max_schedule_ahead_secs: i64,
    /// Accept only numbers in ranges the libphonenumber metadata knows as assigned. Off by default: the metadata
    /// lags new ranges, and test ranges (such as the UK's 07700 900xxx) are not "valid"; a number of a possible
    /// length for its country is enough.
    pub strict_numbers: bool,
    /// Where a message's `callback_url` may point: public addresses, and the private ranges the operator allowed.
    pub callbacks: crate::netguard::Destinations,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_region: None,
            max_segments: 10,
            plan: sms_text::Options::default(),
            default_validity_secs: 48 * 3600,
            max_validity_secs: 7 * 24 * 3600,
            max_schedule_ahead_secs: 365 * 24 * 3600,
            strict_numbers: false,
            callbacks: crate::netguard::Destinations::default(),
        }
    }
}

/// A request to send one message, as any way in receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub to: String,
    pub from: String,
    pub body: String,
    pub send_at: Option<Timestamp>,
    pub validity_secs: Option<i64>,
    pub callback_url: Option<String>,
    /// Which status changes call back, by name; `None`: every one.
    pub callback_statuses: Option<Vec<String>>,
    pub reference: Option<String>,
    /// Transactional (the default) or marketing.
    pub category: crate::consent::Category,
}

/// What kind of sender a message has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind {
    /// Letters and digits, at most 11 characters (SMPP TON 5).
    Alphanumeric,
    /// 3 to 8 digits.
    ShortCode,
    /// A full number in E.164.
    International,
}

/// A request admission accepted, normalized and planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// E.164.
    pub to: String,
    pub from: String,
    pub sender_kind: SenderKind,
    /// The text as it will be sent (after smart encoding, if the policy asks for it).
    pub body: String,
    /// `"gsm7"`, `"ucs2"`, ...
    pub encoding: String,
    pub segments: u32,
    /// `Queued`, or `Scheduled` when `send_at` is in the future.
    pub status: Status,
    pub send_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub callback_url: Option<String>,
    pub callback_statuses: Option<crate::StatusMask>,
    pub reference: Option<String>,
    pub category: crate::consent::Category,
}

/// A stable, machine-readable reason for refusing a message. The API shows [`ErrorCode::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidDestination,
    InvalidSender,
    EmptyBody,
    BodyTooLong,
    InvalidSendAt,
    InvalidValidity,
    InvalidCallbackUrl,
    InvalidCallbackStatuses,
    InvalidReference,
    /// A category no request may ask for (smsgate's own automatic replies).
    InvalidCategory,
    /// The recipient opted out of this account's (or this sender's) texts.
    RecipientOptedOut,
    /// The recipient's allowed hours and the account's never meet, so a held text could never go.
    NoAllowedHours,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidDestination => "invalid_destination",
            ErrorCode::InvalidSender => "invalid_sender",
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::BodyTooLong => "body_too_long",
            ErrorCode::InvalidSendAt => "invalid_send_at",
            ErrorCode::InvalidValidity => "invalid_validity",
            ErrorCode::InvalidCallbackUrl => "invalid_callback_url",
            ErrorCode::InvalidCallbackStatuses => "invalid_callback_statuses",
            ErrorCode::InvalidReference => "invalid_reference",
            ErrorCode::InvalidCategory => "invalid_category",
            ErrorCode::RecipientOptedOut => "recipient_opted_out",
            ErrorCode::NoAllowedHours => "no_allowed_hours",
        }
    }
}

/// Why a request was refused: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        reject(code, message)
    }
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection { code, message: message.into() }
}

/// The most characters a reference may have.
pub const MAX_REFERENCE: usize = 256;
/// The most characters a callback URL may have.
pub const MAX_CALLBACK_URL: usize = 2048;

/// Admits `req` under `policy` at time `now`, or says why not.
pub fn admit(req: &Request, policy: &Policy, now: Timestamp) -> Result<Admitted, Rejection> {
    if req.category == crate::consent::Category::Reply {
        return Err(reject(ErrorCode::InvalidCategory, "category must be \"transactional\" or \"marketing\""));
    }
    let to = normalize_destination(&req.to, policy.default_region, policy.strict_numbers)?;
    let (from, sender_kind) = normalize_sender(&req.from, policy.default_region)?;
    if req.body.is_empty() {
        return Err(reject(ErrorCode::EmptyBody, "body is empty"));
    }
    let plan = sms_text::plan(&req.body, &policy.plan).map_err(|e| reject(ErrorCode::BodyTooLong, e.to_string()))?;
    let max = policy.max_segments.min(sms_text::plan::MAX_SEGMENTS);
    if plan.segments.len() > max {
        return Err(reject(
            ErrorCode::BodyTooLong,
            format!(
                "body needs {} segments in {}; at most {max} are allowed",
                plan.segments.len(),
                plan.encoding.name()
            ),
        ));
    }
    let send_at = match req.send_at {
        Some(t) if t > now.plus_secs(policy.max_schedule_ahead_secs) => {
            return Err(reject(
                ErrorCode::InvalidSendAt,
                format!("send_at is more than {} days ahead", policy.max_schedule_ahead_secs / 86_400),
            ));
        }
        // A time in the past means now.
        Some(t) if t > now => Some(t),
        _ => None,
    };
    let validity = req.validity_secs.unwrap_or(policy.default_validity_secs);
    if !(1..=policy.max_validity_secs).contains(&validity) {
        return Err(reject(
            ErrorCode::InvalidValidity,
            format!("validity must be 1 to {} seconds", policy.max_validity_secs),
        ));
    }
    if let Some(url) = &req.callback_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() > MAX_CALLBACK_URL || url.chars().any(char::is_whitespace) {
            return Err(reject(ErrorCode::InvalidCallbackUrl, "callback_url must be an http:// or https:// URL"));
        }
        policy
            .callbacks
            .check_url(url)
            .map_err(|e| reject(ErrorCode::InvalidCallbackUrl, format!("callback_url: {e}")))?;
    }
    if let Some(r) = &req.reference
        && r.chars().count() > MAX_REFERENCE
    {
        return Err(reject(
            ErrorCode::InvalidReference,
            format!("reference is longer than {MAX_REFERENCE} characters"),
        ));
    }
    let callback_statuses = req.callback_statuses.as_deref().map(callback_statuses).transpose()?;
    Ok(Admitted {
        to,
        from,
        sender_kind,
        encoding: plan.encoding.name(),
        segments: plan.segments.len() as u32,
        body: plan.text,
        status: if send_at.is_some() { Status::Scheduled } else { Status::Queued },
        expires_at: send_at.unwrap_or(now).plus_secs(validity),
        send_at,
        callback_url: req.callback_url.clone(),
        callback_statuses,
        reference: req.reference.clone(),
        category: req.category,
    })
}

/// The statuses that call back, from their names: one or more of those a webhook reports (every status after
/// `queued` but `received`), each once.
fn callback_statuses(names: &[String]) -> Result<crate::StatusMask, Rejection> {
    let notified = |s: &Status| !matches!(s, Status::Scheduled | Status::Queued | Status::Received);
    let allowed = || Status::ALL.iter().filter(|s| notified(s)).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if names.is_empty() {
        return Err(reject(
            ErrorCode::InvalidCallbackStatuses,
            format!("callback_statuses needs one or more of {}", allowed()),
        ));
    }
    let mut statuses = Vec::with_capacity(names.len());
    for name in names {
        match Status::parse(name).filter(notified) {
            Some(s) if !statuses.contains(&s) => statuses.push(s),
            Some(_) => {
                return Err(reject(
                    ErrorCode::InvalidCallbackStatuses,
                    format!("callback_statuses names {name:?} twice"),
                ));
            }
            None => {
                return Err(reject(
                    ErrorCode::InvalidCallbackStatuses,
                    format!("callback_statuses: {name:?} is not one of {}", allowed()),
                ));
            }
        }
    }
    Ok(crate::StatusMask::of(&statuses))
}

/// A destination in E.164: `+` and digits, or a national number read in the default region. It must have a
/// possible length for its country, or (when `strict`) be in a range known as assigned.
pub fn normalize_destination(raw: &str, region: Option<country::Id>, strict: bool) -> Result<String, Rejection> {
    let invalid = |why: &str| reject(ErrorCode::InvalidDestination, format!("to {raw:?} {why}"));
    let cleaned: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    if cleaned.is_empty() {
        return Err(invalid("is empty"));
    }
    if !cleaned.starts_with('+') && region.is_none() {
        return Err(invalid("is not in international form (+ and country code), and no default region is set"));
    }
    if !strict && let Some(e164) = international_fast(&cleaned) {
        return e164.map_err(|()| invalid("is not a valid phone number"));
    }
    let number = phonenumber::parse(region, &cleaned).map_err(|_| invalid("is not a phone number"))?;
    let ok = if strict { phonenumber::is_valid(&number) } else { is_possible(&number) };
    if !ok {
        return Err(invalid("is not a valid phone number"));
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// Whether the national number has a length that a fixed-line, mobile or other subscriber number of its country
/// code has (the metadata keeps lengths per number type; the general descriptor's list is often empty).
fn is_possible(number: &phonenumber::PhoneNumber) -> bool {
    let len = number.national().to_string().len();
    country_code(number.country().code()).is_some_and(|c| c.has_length(len))
}

/// What admission needs to know of a country calling code, gathered once from the metadata of every region that
/// shares it.
#[derive(Debug)]
struct CountryCode {
    /// Bit `n` is set when a national number of `n` digits is possible for some number type of some region.
    lengths: u32,
    /// The national prefixes of its regions ("0" in most; "1" for NANP).
    national_prefixes: Vec<String>,
    /// The patterns some regions read national prefixes and carrier codes with, anchored at the start (as the
    /// parser uses them); a number one of them matches is left to the parser. `None` if one would not compile.
    prefix_patterns: Option<Vec<regex::Regex>>,
}

impl CountryCode {
    fn has_length(&self, len: usize) -> bool {
        len < 32 && self.lengths & (1 << len) != 0
    }
}

/// The country calling codes the metadata knows, indexed by code.
static COUNTRY_CODES: std::sync::LazyLock<Vec<Option<CountryCode>>> = std::sync::LazyLock::new(|| {
    (0..1000u16)
        .map(|code| {
            let metas = phonenumber::metadata::DATABASE.by_code(&code)?;
            let mut c = CountryCode { lengths: 0, national_prefixes: Vec::new(), prefix_patterns: Some(Vec::new()) };
            for m in metas {
                let d = m.descriptors();
                let kinds = [
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.pager(),
                    d.uan(),
                ];
                for desc in kinds.into_iter().flatten().chain([d.general()]) {
                    for &len in desc.possible_length() {
                        if len < 32 {
                            c.lengths |= 1 << len;
                        }
                    }
                }
                c.national_prefixes.extend(m.national_prefix().map(str::to_string));
                if let Some(pattern) = m.national_prefix_for_parsing() {
                    let anchored = regex::Regex::new(&format!("^(?:{})", pattern.as_str())).ok();
                    c.prefix_patterns = c.prefix_patterns.zip(anchored).map(|(mut all, re)| {
                        all.push(re);
                        all
                    });
                }
            }
            Some(c)
        })
        .collect()
});

/// The region (ISO 3166 alpha-2, such as `GB`) of a number in E.164, as the numbering metadata knows it; for
/// routes that match by country.
pub fn country_of(e164: &str) -> Option<String> {
    let number = phonenumber::parse(None, e164).ok()?;
    number.country().id().map(|id| id.as_ref().to_string())
}

/// Loads the numbering metadata now rather than at the first message, which would otherwise wait for it (about
/// 60 ms: the metadata is decoded and its national prefix patterns compiled on first use).
pub fn load_metadata() {
    std::sync::LazyLock::force(&COUNTRY_CODES);
}

fn country_code(code: u16) -> Option<&'static CountryCode> {
    COUNTRY_CODES.get(usize::from(code)).and_then(Option::as_ref)
}

/// The common case without the full parser: `+` and 8 to 15 digits (E.164) in which no region of its country code
/// would see a national prefix or carrier code. The parser finds the region by matching the number against each region's patterns,
/// which cost more than everything else admission does; what it would return here is the input itself. `None`
/// when the full parser must decide; `Some(Err)` when the number has an impossible length.
fn international_fast(cleaned: &str) -> Option<Result<String, ()>> {
    let digits = cleaned.strip_prefix('+')?;
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Country codes are prefix-free: the first of one, two or three digits that is a code is the code.
    let (code, national) = (1..=3).find_map(|n| {
        let code: u16 = digits[..n].parse().ok()?;
        country_code(code).map(|c| (c, &digits[n..]))
    })?;
    let plain = code.prefix_patterns.as_ref().is_some_and(|all| !all.iter().any(|re| re.is_match(national)))
        && !national.starts_with('0')
        && !code.national_prefixes.iter().any(|p| national.starts_with(p.as_str()));
    if !plain {
        return None;
    }
    Some(if code.has_length(national.len()) { Ok(cleaned.to_string()) } else { Err(()) })
}

/// A sender: alphanumeric (at most 11 characters, at least one letter), a short code (3 to 8 digits), or an
/// international number.
pub fn normalize_sender(raw: &str, region: Option<country::Id>) -> Result<(String, SenderKind), Rejection> {
    let invalid = |why: &str| reject(ErrorCode::InvalidSender, format!("from {raw:?} {why}"));
    let s = raw.trim();
    if s.is_empty() {
        return Err(invalid("is empty"));
    }
    let digits = s.strip_prefix('+').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if !s.starts_with('+') && (3..=8).contains(&digits.len()) {
            return Ok((digits.to_string(), SenderKind::ShortCode));
        }
        let plus = format!("+{digits}");
        let number = normalize_destination(if s.starts_with('+') { s } else { &plus }, region, false)
            .or_else(|_| normalize_destination(s, region, false))
            .map_err(|_| invalid("is neither a short code (3 to 8 digits) nor a valid international number"))?;
        return Ok((number, SenderKind::International));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -_.&'!#@+".contains(c);
    if s.chars().count() > 11 {
        return Err(invalid("is longer than 11 characters, the most an alphanumeric sender may have"));
    }
    if !s.chars().all(allowed) || !s.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(invalid("must be letters and digits (at least one letter), spaces or - _ . & ' ! # @ +"));
    }
    Ok((s.to_string(), SenderKind::Alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_780_000_000_000);

    /// The full parser's answer for an international number, as admission used it before the fast path.
    fn parsed(s: &str) -> Option<Result<String, ()>> {
        let number = phonenumber::parse(None, s).ok()?;
        Some(if is_possible(&number) { Ok(number.format().mode(Mode::E164).to_string()) } else { Err(()) })
    }

    /// The fast path agrees with the full parser on every example number of every region in the metadata, and on
    /// each one a digit shorter, a digit longer, and with a national prefix left in.
    #[test]
    fn the_fast_path_agrees_with_the_parser() {
        let (mut fast, mut all) = (0, 0);
        for code in 1..1000u16 {
            let Some(metas) = phonenumber::metadata::DATABASE.by_code(&code) else { continue };
            for m in metas {
                let d = m.descriptors();
                let examples = [d.fixed_line(), d.mobile(), d.toll_free(), d.voip(), d.pager(), d.uan()];
                for example in examples.into_iter().flatten().filter_map(|d| d.example()) {
                    let prefix = m.national_prefix().unwrap_or("0");
                    let short = &example[..example.len() - 1];
                    for national in
                        [example.to_string(), short.to_string(), format!("{example}7"), format!("{prefix}{example}")]
                    {
                        let input = format!("+{code}{national}");
                        all += 1;
                        if let Some(quick) = international_fast(&input) {
                            fast += 1;
                            assert_eq!(Some(quick.clone()), parsed(&input), "{input} ({})", m.id());
                        }
                    }
                }
            }
        }
        // Most numbers take the fast path: the test compares something.
        assert!(fast * 2 > all, "{fast} of {all} on the fast path");
        for n in ["+447700900123", "+14155550123", "+4915112345678", "+33612345678"] {
            assert!(international_fast(n).is_some(), "{n}");
        }
    }

    fn request(to: &str, from: &str, body: &str) -> Request {
        Request { to: to.into(), from: from.into(), body: body.into(), ..Request::default() }
    }

    fn code(r: Result<Admitted, Rejection>) -> &'static str {
        r.expect_err("rejected").code.as_str()
    }

    #[test]
    fn admits_and_normalizes() {
        let a = admit(&request("+44 7700 900123", "Acme", "Hello"), &Policy::default(), NOW).unwrap();
        assert_eq!(a.to, "+447700900123");
        assert_eq!((a.from.as_str(), a.sender_kind), ("Acme", SenderKind::Alphanumeric));
        assert_eq!((a.encoding.as_str(), a.segments, a.status), ("gsm7", 1, Status::Queued));
        assert_eq!(a.expires_at, NOW.plus_secs(48 * 3600));
        let us = Policy { default_region: Some(country::Id::US), ..Policy::default() };
        let a = admit(&request("(415) 555-0123", "12345", "Hi"), &us, NOW).unwrap();
        assert_eq!(a.to, "+14155550123");
        assert_eq!(a.sender_kind, SenderKind::ShortCode);
        let a = admit(&request("+14155550123", "447700900123", "Hi"), &us, NOW).unwrap();
        assert_eq!((a.from.as_str(), a.sender_kind), ("+447700900123", SenderKind::International));
    }

    #[test]
    fn refuses_with_stable_codes() {
        let p = Policy::default();
        assert_eq!(code(admit(&request("", "Acme", "x"), &p, NOW)), "invalid_destination");
        assert_eq!(code(admit(&request("07700900123", "Acme", "x"), &p, NOW)), "invalid_destination");
        assert_eq!(code(admit(&request("+999123", "Acme", "x"), &p, NOW)), "invalid_destination");
        assert_eq!(code(admit(&request("+4477009001234567", "Acme", "x"), &p, NOW)), "invalid_destination");
        assert_eq!(code(admit(&request("+447700900123", "", "x"), &p, NOW)), "invalid_sender");
        assert_eq!(code(admit(&request("+447700900123", "AcmeCorporation", "x"), &p, NOW)), "invalid_sender");
        assert_eq!(code(admit(&request("+447700900123", "12", "x"), &p, NOW)), "invalid_sender");
        assert_eq!(code(admit(&request("+447700900123", "Ac<me>", "x"), &p, NOW)), "invalid_sender");
        assert_eq!(code(admit(&request("+447700900123", "Acme", ""), &p, NOW)), "empty_body");
        assert_eq!(code(admit(&request("+447700900123", "Acme", &"a".repeat(1531)), &p, NOW)), "body_too_long");
        let mut r = request("+447700900123", "Acme", "x");
        r.validity_secs = Some(0);
        assert_eq!(code(admit(&r, &p, NOW)), "invalid_validity");
        r.validity_secs = None;
        r.send_at = Some(NOW.plus_secs(400 * 86_400));
        assert_eq!(code(admit(&r, &p, NOW)), "invalid_send_at");
        r.send_at = None;
        r.callback_url = Some("ftp://x".into());
        assert_eq!(code(admit(&r, &p, NOW)), "invalid_callback_url");
        r.callback_url = None;
        for bad in [&[][..], &["queued"], &["received"], &["delivered", "delivered"], &["DELIVERED"], &["gone"]] {
            r.callback_statuses = Some(bad.iter().map(|s| s.to_string()).collect());
            assert_eq!(code(admit(&r, &p, NOW)), "invalid_callback_statuses", "{bad:?}");
        }
        r.callback_statuses = Some(vec!["delivered".into(), "failed".into()]);
        let mask = admit(&r, &p, NOW).unwrap().callback_statuses.unwrap();
        assert_eq!(mask.statuses(), vec![Status::Delivered, Status::Failed]);
        r.callback_statuses = None;
        r.reference = Some("r".repeat(257));
        assert_eq!(code(admit(&r, &p, NOW)), "invalid_reference");
    }

    #[test]
    fn strict_numbers_refuse_unassigned_ranges() {
        let strict = Policy { strict_numbers: true, ..Policy::default() };
        // 07700 900xxx is the UK's range for drama: possible, never assigned.
        assert_eq!(code(admit(&request("+447700900123", "Acme", "x"), &strict, NOW)), "invalid_destination");
        assert!(admit(&request("+447400123456", "Acme", "x"), &strict, NOW).is_ok());
    }

    #[test]
    fn scheduling() {
        let p = Policy::default();
        let mut r = request("+447700900123", "Acme", "later");
        r.send_at = Some(NOW.plus_secs(3600));
        r.validity_secs = Some(600);
        let a = admit(&r, &p, NOW).unwrap();
        assert_eq!((a.status, a.send_at), (Status::Scheduled, Some(NOW.plus_secs(3600))));
        assert_eq!(a.expires_at, NOW.plus_secs(3600 + 600));
        // A time in the past means now.
        r.send_at = Some(NOW.plus_secs(-60));
        let a = admit(&r, &p, NOW).unwrap();
        assert_eq!((a.status, a.send_at), (Status::Queued, None));
    }

    #[test]
    fn segments_limit_follows_the_policy() {
        let text = "a".repeat(1530);
        assert_eq!(admit(&request("+447700900123", "Acme", &text), &Policy::default(), NOW).unwrap().segments, 10);
        let one = Policy { max_segments: 1, ..Policy::default() };
        assert_eq!(code(admit(&request("+447700900123", "Acme", &"a".repeat(161)), &one, NOW)), "body_too_long");
    }
}
