//! [`Links`]: short links in texts. A template's `{{ link("https://shop.example/offer") }}` becomes
//! `BASE/l/CODE` for each text, where BASE is the account's link base URL (else the server's public URL) and CODE
//! is the second it was made in and eight random characters (see [`new_code`]: unguessable, and saying nothing of
//! the contact). A visit of `/l/CODE` redirects to the URL and records a click for the text's message, contact and
//! campaign.

use std::sync::Arc;

use smsgate_core::{AccountId, MessageId, Timestamp};
use smsgate_store::rollups::Counted;
use smsgate_store::{Click, Counters, Link, Rollups, Store};

use crate::error::{Result, ServiceError};
use crate::templates::Rendered;

/// Characters in a link's code.
pub const CODE_LEN: usize = 10;
/// The most characters a link's target URL has.
pub const MAX_URL: usize = 2000;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// User agents of link previews and crawlers: their visits are kept but are not clicks.
const ROBOTS: [&str; 14] = [
    "bot",
    "crawler",
    "spider",
    "preview",
    "facebookexternalhit",
    "whatsapp",
    "telegram",
    "slack",
    "discord",
    "skypeuripreview",
    "bingpreview",
    "embedly",
    "curl/",
    "wget/",
];

/// Characters of a code that tell the second it was made in (of a cycle of 62² seconds, about an hour).
const SECOND_LEN: usize = 2;

/// A new code made at `now`: the second it is made in (of a cycle of 62² seconds) in its first two characters,
/// then eight random ones (about 47 bits). A link is looked up by its code, so the codes are an index's keys: codes
/// made in one second sit together in it, and a campaign's batch of links writes a few of its pages instead of one
/// for each link (random codes put each one on a page of its own). That says when a link was made to within the
/// hour's cycle and nothing else; guessing stays as hard: one code in 62⁸ of those of a second is one.
pub fn new_code(now: Timestamp) -> String {
    let second = now.0.div_euclid(1000).rem_euclid(62 * 62) as usize;
    let mut code = String::with_capacity(CODE_LEN);
    code.push(char::from(BASE62[second / 62]));
    code.push(char::from(BASE62[second % 62]));
    code + &random(CODE_LEN - SECOND_LEN)
}

/// `n` (at most 20: a version 4 UUID has 122 random bits) random characters of [`BASE62`].
pub fn random(n: usize) -> String {
    let mut bits = uuid::Uuid::new_v4().as_u128();
    let mut out = String::with_capacity(n);
    for _ in 0..n {
        out.push(char::from(BASE62[(bits % 62) as usize]));
        bits /= 62;
    }
    out
}

/// Whether a code could be one [`new_code`] made.
fn code_ok(code: &str) -> bool {
    code.len() == CODE_LEN && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why `base` cannot be a link base URL (an absolute `http` or `https` URL without query or fragment), if it
/// cannot.
pub fn check_base(base: &str) -> std::result::Result<(), String> {
    let url = url::Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{base:?} is not an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || base.len() > 200 {
        return Err(format!("{base:?} has a query or fragment, or is longer than 200 characters"));
    }
    Ok(())
}

/// Why `url` cannot be a link's target, if it cannot.
pub fn check_target(target: &str) -> std::result::Result<(), String> {
    if target.len() > MAX_URL {
        return Err(format!("a link's URL has at most {MAX_URL} characters"));
    }
    let url = url::Url::parse(target).map_err(|e| format!("link: {target:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("link: {target:?} is not an http or https URL"));
    }
    Ok(())
}

/// Short links of accounts.
#[derive(Debug, Clone)]
pub struct Links {
    store: Arc<dyn Store>,
    /// The server's public URL, for accounts without a base of their own.
    default_base: Arc<str>,
}

/// An account's link settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// The account's own base URL, if it set one.
    pub base_url: Option<String>,
    /// The base its links use: its own, else the server's.
    pub effective: String,
}

/// Links made for one text, and the text with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shortened {
    pub text: String,
    pub links: Vec<Link>,
}

impl Links {
    pub fn new(store: Arc<dyn Store>, default_base: &str) -> Links {
        Links { store, default_base: Arc::from(default_base.trim_end_matches('/')) }
    }

    /// The base an account's links use.
    pub async fn base(&self, account: AccountId) -> Result<String> {
        let own = self.store.link_base(account).await?;
        Ok(own.unwrap_or_else(|| self.default_base.to_string()))
    }

    /// An account's link settings.
    pub async fn settings(&self, account: AccountId) -> Result<LinkSettings> {
        let own = self.store.link_base(account).await?;
        let effective = own.clone().unwrap_or_else(|| self.default_base.to_string());
        Ok(LinkSettings { base_url: own, effective })
    }

    /// Sets (or clears) an account's base URL; 422 `invalid_base_url`.
    pub async fn set_base(&self, account: AccountId, base: Option<&str>, now: Timestamp) -> Result<LinkSettings> {
        let base = base.map(|b| b.trim().trim_end_matches('/').to_string()).filter(|b| !b.is_empty());
        if let Some(b) = &base {
            check_base(b).map_err(|e| ServiceError::invalid("invalid_base_url", e))?;
        }
        self.store.set_link_base(account, base.as_deref(), now).await?;
        self.settings(account).await
    }

    /// The text of `rendered` with each link made a short link under `base`, and the links to store (for
    /// `contact` and `campaign`; the message is set by the caller once it has an id).
    pub fn shorten(
        rendered: &Rendered,
        base: &str,
        account: AccountId,
        contact: Option<&str>,
        campaign: Option<&str>,
        now: Timestamp,
    ) -> Shortened {
        let mut links = Vec::new();
        let text = rendered.with_links(|url| {
            let code = new_code(now);
            let short = format!("{base}/l/{code}");
            links.push(Link {
                code,
                account_id: account,
                url: url.to_string(),
                message_id: None,
                contact_id: contact.map(String::from),
                campaign_id: campaign.map(String::from),
                created_at: now,
            });
            short
        });
        Shortened { text, links }
    }

    /// The text of `rendered` as it will read, each link as long as its short link will be (for previews).
    pub fn sample(rendered: &Rendered, base: &str) -> String {
        rendered.with_links(|_| format!("{base}/l/{}", "x".repeat(CODE_LEN)))
    }

    /// A visit of `/l/{code}`: the URL to redirect to, with the click recorded (a robot's visit kept but not counted
    /// as a click); `None` for a code that is not a link.
    pub async fn visit(&self, code: &str, user_agent: Option<&str>, now: Timestamp) -> Result<Option<String>> {
        if !code_ok(code) {
            return Ok(None);
        }
        let Some(link) = self.store.link(code).await? else { return Ok(None) };
        let agent = user_agent.map(|a| a.chars().take(256).collect::<String>());
        let lower = agent.as_deref().unwrap_or("").to_ascii_lowercase();
        let robot = agent.is_none() || ROBOTS.iter().any(|r| lower.contains(r));
        // A person's visit counts in the rollups, by the text's campaign, connector, country and sender.
        let mut counts = Rollups::default();
        if !robot {
            let message = match link.message_id.as_deref().and_then(MessageId::parse) {
                Some(id) => self.store.message(link.account_id, id).await?,
                None => None,
            };
            let account = link.account_id.to_string();
            let counted = Counted {
                account_id: &account,
                inbound: false,
                handset: message.as_ref().map_or("", |m| m.to.as_str()),
                address: message.as_ref().map_or("", |m| m.from.as_str()),
                campaign: link.campaign_id.as_deref(),
                connector: message.as_ref().and_then(|m| m.connector.as_deref()),
                price_micros: None,
                created_at: now,
            };
            counts = Rollups::of(&counted, now, Counters { clicks: 1, ..Counters::default() });
        }
        let click = Click { id: uuid::Uuid::now_v7().to_string(), code: link.code, at: now, robot, user_agent: agent };
        self.store.record_click(&click, &counts).await?;
        Ok(Some(link.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_and_of_one_form() {
        let now = Timestamp(1_796_698_189_906);
        let a = new_code(now);
        let b = new_code(now);
        assert_ne!(a, b);
        assert!(code_ok(&a) && code_ok(&b), "{a} {b}");
        assert!(!code_ok("short") && !code_ok("../../etc/x") && !code_ok("abcdefghi!"));
        // The random part: 8 characters, none the same across a thousand codes.
        let codes: std::collections::HashSet<String> = (0..1000).map(|_| new_code(now)[2..].to_string()).collect();
        assert_eq!(codes.len(), 1000);
    }

    #[test]
    fn codes_of_one_second_sort_together() {
        // 1,796,698,189 s is 467,403 cycles of 3,844 s and 1,057 s more: 17 and 3, "H" and "3".
        let at = |ms: i64| new_code(Timestamp(ms));
        assert!(at(1_796_698_189_000).starts_with("H3") && at(1_796_698_189_999).starts_with("H3"));
        assert!(at(1_796_698_190_000).starts_with("H4"), "the next second");
        // 61 s into a cycle, then 62 s.
        assert!(at(1_796_697_193_000).starts_with("0z") && at(1_796_697_194_000).starts_with("10"));
        // A cycle later the same prefix; before the epoch (a clock gone wrong) still a code.
        assert!(at(1_796_698_189_000 + 3_844_000).starts_with("H3"));
        assert!(code_ok(&at(-1)));
    }

    #[test]
    fn bases_and_targets() {
        assert!(check_base("https://go.example.com").is_ok());
        assert!(check_base("http://127.0.0.1:8080").is_ok());
        for bad in [
            "go.example.com",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://x.example/#f",
            "javascript:alert(1)",
        ] {
            assert!(check_base(bad).is_err(), "{bad}");
        }
        assert!(check_target("https://shop.example/offer?utm=sms").is_ok());
        assert!(check_target("javascript:alert(1)").is_err());
        assert!(check_target(&format!("https://x.example/{}", "a".repeat(MAX_URL))).is_err());
    }
}
