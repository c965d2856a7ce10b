//! The properties the `api_body` fuzz target holds, here so that the normal tests run them too (a property test
//! over mutated bodies, `tests/bodies.rs`). Panics when a property fails.
//!
//! Any octets, read as the JSON bodies the API takes: no panic in parsing, in admission (destination, sender,
//! text planning, times, callback URL and the private-address check) or in the other bodies' checks; what
//! admission accepts is well-formed, and what it refuses has a code.

use serde_json::Value;
use smsgate_core::Timestamp;
use smsgate_core::admission::{Policy, admit, normalize_sender};
use smsgate_core::netguard::Destinations;

/// Checks one input.
pub fn check_body(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let now = Timestamp(1_780_000_000_000);
    let policy = Policy::default();
    let mut bodies = vec![value.clone()];
    if let Some(items) = value.get("messages").and_then(Value::as_array) {
        bodies.extend(items.iter().take(64).cloned());
    }
    for body in bodies {
        let Ok(send) = serde_json::from_value::<crate::SendBody>(body) else { continue };
        let Ok(request) = crate::request_of(send) else { continue };
        match admit(&request, &policy, now) {
            Ok(a) => {
                assert!(a.to.starts_with('+') && a.to.len() > 1, "{a:?}");
                assert!(a.segments >= 1 && a.segments as usize <= policy.max_segments, "{a:?}");
                assert!(!a.body.is_empty() && a.expires_at > now, "{a:?}");
            }
            Err(r) => assert!(!r.code.as_str().is_empty() && !r.message.is_empty()),
        }
    }
    let strict = Destinations::default();
    for field in ["callback_url", "status_url", "inbound_url"] {
        if let Some(url) = value.get(field).and_then(Value::as_str) {
            let _ = strict.check_url(url);
        }
    }
    for field in ["number", "sender_id", "from"] {
        if let Some(s) = value.get(field).and_then(Value::as_str) {
            let _ = normalize_sender(s, None);
            let _ = smsgate_core::senders::address_key(s);
        }
    }
    if let Some(names) = value.get("scopes").and_then(Value::as_array) {
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        let _ = smsgate_core::access::Scopes::parse(&names);
    }
    let _ = serde_json::from_value::<crate::senders::NumberBody>(value.clone());
    let _ = serde_json::from_value::<crate::senders::SenderIdBody>(value.clone());
    let _ = serde_json::from_value::<crate::routing::AccountPatch>(value.clone());
    let _ = serde_json::from_value::<crate::webhooks::WebhooksBody>(value);
}
