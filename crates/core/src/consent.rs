//! Consent: what a recipient said about receiving texts, and what an account does about it. An inbound text that is
//! a keyword ([`Keywords::classify`]) opts its sender out, back in, or asks for help; each account has its
//! [`Compliance`] settings (the keywords, the replies, the scope of an opt-out, whether transactional texts still go
//! to a number that opted out, the quiet hours it keeps, how long it keeps message history).
//!
//! The keyword defaults are CTIA's and Twilio's, with the words the FCC's 2024 order names as a revocation per se
//! (47 CFR 64.1200(a)(12): stop, quit, end, revoke, opt out, cancel, unsubscribe); ../shared/COMPLIANCE.md cites each.

use serde::{Deserialize, Serialize};

use crate::quiet::Hours;

/// What a message is for, which decides the rules it is sent under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A text the recipient expects from a transaction: a code, a receipt, a reminder they asked for (the default).
    #[default]
    Transactional,
    /// Promotion: held for the recipient's quiet hours, never sent after an opt-out.
    Marketing,
    /// smsgate's own automatic reply to a keyword (the opt-out's confirmation, help): exempt from the opt-out it
    /// answers and from quiet hours. No request may ask for it.
    Reply,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
            Category::Reply => "reply",
        }
    }

    /// Any category, as stored.
    pub fn parse(s: &str) -> Option<Category> {
        match s {
            "transactional" => Some(Category::Transactional),
            "marketing" => Some(Category::Marketing),
            "reply" => Some(Category::Reply),
            _ => None,
        }
    }

    /// A category a request may ask for: `transactional` or `marketing`.
    pub fn requested(s: &str) -> Option<Category> {
        Category::parse(s).filter(|c| *c != Category::Reply)
    }
}

/// What an inbound keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    OptOut,
    OptIn,
    Help,
}

/// Which sends an opt-out stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptOutScope {
    /// Every text of the account that owns the number the keyword came to (the default).
    #[default]
    Account,
    /// Only texts from the number the keyword came to.
    Number,
}

/// How a number's consent changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The recipient texted a keyword.
    Keyword,
    /// Through the API (`POST`/`DELETE /v1/opt-outs`, a contact's consent).
    Api,
    /// A CSV import whose rows carry consent.
    Import,
    /// A user of the dashboard.
    Dashboard,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Keyword => "keyword",
            Source::Api => "api",
            Source::Import => "import",
            Source::Dashboard => "dashboard",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "keyword" => Some(Source::Keyword),
            "api" => Some(Source::Api),
            "import" => Some(Source::Import),
            "dashboard" => Some(Source::Dashboard),
            _ => None,
        }
    }
}

/// The keyword sets of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keywords {
    pub opt_out: Vec<String>,
    pub opt_in: Vec<String>,
    pub help: Vec<String>,
}

impl Default for Keywords {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_string()).collect();
        Keywords {
            opt_out: words(&[
                "STOP",
                "STOPALL",
                "STOP ALL",
                "UNSUBSCRIBE",
                "CANCEL",
                "END",
                "QUIT",
                "REVOKE",
                "OPTOUT",
                "OPT OUT",
                "OPT-OUT",
            ]),
            opt_in: words(&["START", "UNSTOP", "YES"]),
            help: words(&["HELP", "INFO"]),
        }
    }
}

/// The form texts and keywords are compared in: trimmed, trailing punctuation dropped, inner runs of white space
/// made one space, case-folded.
pub fn fold(text: &str) -> String {
    let trimmed = text.trim().trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace() || c == '¡');
    let trimmed = trimmed.trim_start();
    let mut out = String::with_capacity(trimmed.len());
    for word in trimmed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

impl Keywords {
    /// What `text`, a whole inbound message, asks for; `None` when it is not a keyword ("STOP PLEASE" is not).
    /// Opt-out is looked at first, so a word in two sets opts out.
    pub fn classify(&self, text: &str) -> Option<Keyword> {
        // Keywords are short: skip folding a long text.
        if text.len() > 64 {
            return None;
        }
        let folded = fold(text);
        let has = |set: &[String]| set.iter().any(|k| fold(k) == folded);
        if has(&self.opt_out) {
            Some(Keyword::OptOut)
        } else if has(&self.opt_in) {
            Some(Keyword::OptIn)
        } else if has(&self.help) {
            Some(Keyword::Help)
        } else {
            None
        }
    }

    /// Why these sets cannot be used, if they cannot: an empty or over-long word, or no opt-out word at all.
    pub fn problem(&self) -> Option<String> {
        if self.opt_out.is_empty() {
            return Some("opt_out needs at least one keyword: recipients must be able to stop".into());
        }
        for word in self.opt_out.iter().chain(&self.opt_in).chain(&self.help) {
            let folded = fold(word);
            if folded.is_empty() || folded.len() > 32 {
                return Some(format!("keyword {word:?} must have 1 to 32 characters besides punctuation"));
            }
        }
        None
    }
}

/// The automatic replies to keywords. `{business}` is replaced with the account's business name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replies {
    pub opt_out: String,
    pub opt_in: String,
    pub help: String,
}

impl Default for Replies {
    fn default() -> Self {
        Replies {
            opt_out: "{business}: you are unsubscribed and will receive no more messages. Reply START to \
                      resubscribe."
                .into(),
            opt_in: "{business}: you are subscribed again. Msg&data rates may apply. Reply HELP for help, STOP to \
                     unsubscribe."
                .into(),
            help: "{business}: for help, contact us. Msg&data rates may apply. Reply STOP to unsubscribe.".into(),
        }
    }
}

impl Replies {
    /// The reply to `keyword`, for `business`.
    pub fn text(&self, keyword: Keyword, business: &str) -> String {
        let template = match keyword {
            Keyword::OptOut => &self.opt_out,
            Keyword::OptIn => &self.opt_in,
            Keyword::Help => &self.help,
        };
        template.replace("{business}", business)
    }
}

/// An account's compliance settings (`GET`/`PUT /v1/settings/compliance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compliance {
    /// The name the replies give; `None`: the account's name.
    pub business_name: Option<String>,
    pub keywords: Keywords,
    pub replies: Replies,
    /// Whether each keyword gets its automatic reply.
    pub auto_reply: bool,
    pub opt_out_scope: OptOutScope,
    /// Whether transactional texts still go to a number that opted out (marketing never does).
    pub transactional_after_opt_out: bool,
    /// The hours the account keeps, within the law's ([`crate::quiet`]); `None`: the law's alone.
    pub quiet_hours: Option<Hours>,
    /// Whether transactional texts wait for quiet hours too (marketing always does).
    pub quiet_hours_transactional: bool,
    /// Final messages older than this many days lose their body and numbers; `None`: kept.
    pub retention_days: Option<u32>,
}

impl Default for Compliance {
    fn default() -> Self {
        Compliance {
            business_name: None,
            keywords: Keywords::default(),
            replies: Replies::default(),
            auto_reply: true,
            opt_out_scope: OptOutScope::Account,
            transactional_after_opt_out: false,
            quiet_hours: None,
            quiet_hours_transactional: false,
            retention_days: None,
        }
    }
}

impl Compliance {
    /// Why these settings cannot be used, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = self.keywords.problem() {
            return Some(p);
        }
        for (name, text) in
            [("opt_out", &self.replies.opt_out), ("opt_in", &self.replies.opt_in), ("help", &self.replies.help)]
        {
            if text.trim().is_empty() || text.chars().count() > 320 {
                return Some(format!("replies.{name} must have 1 to 320 characters"));
            }
        }
        if self.retention_days == Some(0) {
            return Some("retention_days must be at least 1 (or null to keep history)".into());
        }
        if let Some(h) = &self.quiet_hours
            && let Some(p) = h.problem()
        {
            return Some(format!("quiet_hours: {p}"));
        }
        None
    }

    /// Whether a text of `category` may not go to a number that opted out.
    pub fn blocked_by_opt_out(&self, category: Category) -> bool {
        match category {
            Category::Marketing => true,
            Category::Transactional => !self.transactional_after_opt_out,
            Category::Reply => false,
        }
    }

    /// Whether a text of `category` waits for the recipient's allowed hours.
    pub fn holds(&self, category: Category) -> bool {
        match category {
            Category::Marketing => true,
            Category::Transactional => self.quiet_hours_transactional,
            Category::Reply => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<Keyword>) {
        assert_eq!(Keywords::default().classify(text), expected, "{text:?}");
    }

    #[test]
    fn every_default_keyword_in_every_form() {
        let k = Keywords::default();
        for (set, kind) in [(&k.opt_out, Keyword::OptOut), (&k.opt_in, Keyword::OptIn), (&k.help, Keyword::Help)] {
            for word in set {
                for form in [
                    word.clone(),
                    word.to_lowercase(),
                    format!("  {word}  "),
                    format!("{word}."),
                    format!("{word}!!"),
                    format!("\t{}\n", word.to_lowercase()),
                ] {
                    check(&form, Some(kind));
                }
            }
        }
    }

    #[test]
    fn what_is_not_a_keyword() {
        check("STOP PLEASE", None);
        check("please stop", None);
        check("stopp", None);
        check("", None);
        check("!!!", None);
        check("Stop  all", Some(Keyword::OptOut));
        check("Opt out?", Some(Keyword::OptOut));
        check("Yes", Some(Keyword::OptIn));
        check("info?", Some(Keyword::Help));
        check(&"STOP ".repeat(40), None);
    }

    #[test]
    fn settings_refuse_what_would_trap_a_recipient() {
        let mut c = Compliance::default();
        assert_eq!(c.problem(), None);
        c.keywords.opt_out.clear();
        assert!(c.problem().is_some());
        let mut c = Compliance::default();
        c.keywords.help.push("...".into());
        assert!(c.problem().is_some());
        let mut c = Compliance { retention_days: Some(0), ..Compliance::default() };
        assert!(c.problem().is_some());
        c.retention_days = Some(30);
        c.replies.help = " ".into();
        assert!(c.problem().is_some());
    }

    #[test]
    fn settings_read_from_json_with_defaults() {
        let c: Compliance = serde_json::from_str(r#"{"opt_out_scope": "number"}"#).unwrap();
        assert_eq!(c.opt_out_scope, OptOutScope::Number);
        assert_eq!(c.keywords, Keywords::default());
        assert!(serde_json::from_str::<Compliance>(r#"{"opt_out_scop": "number"}"#).is_err());
    }

    #[test]
    fn an_automatic_reply_passes_what_it_answers() {
        let c = Compliance { quiet_hours_transactional: true, ..Compliance::default() };
        assert!(!c.blocked_by_opt_out(Category::Reply) && !c.holds(Category::Reply));
        assert!(c.blocked_by_opt_out(Category::Transactional) && c.blocked_by_opt_out(Category::Marketing));
        assert_eq!(Category::requested("reply"), None, "no request may ask for it");
        assert_eq!(Category::requested("marketing"), Some(Category::Marketing));
    }

    #[test]
    fn replies_name_the_business() {
        let r = Replies::default();
        assert!(r.text(Keyword::Help, "Acme Dental").starts_with("Acme Dental:"));
        assert!(r.text(Keyword::OptOut, "Acme").contains("START"));
    }
}
