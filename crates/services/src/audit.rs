//! The audit log: every change made over the API, with who made it ([`Admin::record_change`]), and the
//! operator's view of it ([`Admin::audit`]). Secrets in a request's body are replaced before it is kept.

use serde_json::Value;
use smsgate_core::AccountId;
use smsgate_store::{Account, AuditEntry};

use crate::admin::Admin;
use crate::error::{Result, ServiceError};

/// The most characters of a request's body kept with its entry.
pub const MAX_DETAIL: usize = 4096;

/// A change to keep.
#[derive(Debug, Clone)]
pub struct Change {
    pub actor_account: Option<AccountId>,
    pub actor_key: Option<String>,
    pub action: String,
    pub target: String,
    pub status: u16,
    /// The request's JSON body, if it had one.
    pub body: Option<Value>,
}

/// Whether a field holds a secret: its value is never kept. The store's rule for sealed settings, and keys too.
fn secret_field(name: &str) -> bool {
    smsgate_store::seal::secret_field(name) || name.to_ascii_lowercase().contains("key")
}

/// `value` with every secret field's value replaced by stars, at any depth.
pub fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if secret_field(k) && !v.is_null() { Value::from("********") } else { redacted(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

impl Admin {
    /// Keeps a change in the audit log.
    pub async fn record_change(&self, change: Change) -> Result<()> {
        let detail = change.body.as_ref().map(|b| {
            let text = redacted(b).to_string();
            if text.len() > MAX_DETAIL {
                let mut end = MAX_DETAIL;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &text[..end])
            } else {
                text
            }
        });
        let entry = AuditEntry {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            at: self.now(),
            actor_account: change.actor_account,
            actor_key: change.actor_key,
            action: change.action,
            target: change.target,
            status: change.status,
            detail,
        };
        Ok(self.store.record_audit(&entry).await?)
    }

    /// The audit log, newest first: every account's changes, or `actor`'s. Operator only.
    pub async fn audit(
        &self,
        caller: &Account,
        actor: Option<AccountId>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        if !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key reads the audit log"));
        }
        if !(1..=crate::messages::MAX_PAGE).contains(&limit) {
            return Err(ServiceError::invalid(
                "invalid_limit",
                format!("limit must be 1 to {}", crate::messages::MAX_PAGE),
            ));
        }
        Ok(self.store.audit(actor, cursor, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_at_any_depth() {
        let body = serde_json::json!({"system_id": "app", "password": "s3cret", "settings": {"tls_key": "x",
            "api_key": null, "host": "h"}, "list": [{"secret": "y"}]});
        assert_eq!(
            redacted(&body),
            serde_json::json!({"system_id": "app", "password": "********", "settings": {"tls_key": "********",
                "api_key": null, "host": "h"}, "list": [{"secret": "********"}]})
        );
    }
}
