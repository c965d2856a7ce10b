//! SMPP credentials: what an account's client applications bind with. Cold-path SQL, written once
//! ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::corrupt;
use crate::sql::{Database, Row, values};

/// What an account's SMPP client applications bind with.
#[derive(Debug, Clone, PartialEq)]
pub struct SmppCredential {
    pub system_id: String,
    pub account_id: AccountId,
    /// An Argon2 PHC string.
    pub password_hash: String,
    /// Address ranges binds may come from; `None`: anywhere.
    pub allowed_ips: Option<Vec<String>>,
    /// Binds at once; `None`: no limit.
    pub max_binds: Option<u32>,
    /// Submits per second over all its binds; `None`: no limit.
    pub throughput: Option<f64>,
    pub created_at: Timestamp,
}

/// SMPP credentials, by `system_id`.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Adds SMPP credentials; false when the `system_id` is taken (by any account: binds name no account).
    async fn create_smpp_credential(&self, credential: &SmppCredential) -> Result<bool>;

    /// An account's SMPP credentials, by `system_id`.
    async fn smpp_credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>>;

    /// The credentials a bind names.
    async fn smpp_credential(&self, system_id: &str) -> Result<Option<SmppCredential>>;

    /// Removes an account's credentials; false when it has none of that `system_id`.
    async fn delete_smpp_credential(&self, account: AccountId, system_id: &str) -> Result<bool>;
}

const COLUMNS: &str = "system_id, account_id, password_hash, allowed_ips, max_binds, throughput, created_at";

fn credential_of(r: &Row) -> Result<SmppCredential> {
    let ips: Option<String> = r.get("allowed_ips")?;
    Ok(SmppCredential {
        system_id: r.get("system_id")?,
        account_id: r.account_id("account_id")?,
        password_hash: r.get("password_hash")?,
        allowed_ips: ips
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| corrupt(format!("allowed_ips: {e}")))?,
        max_binds: r.get::<Option<i64>>("max_binds")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        throughput: r.get("throughput")?,
        created_at: r.timestamp("created_at")?,
    })
}

#[async_trait]
impl<D: Database> CredentialStore for D {
    async fn create_smpp_credential(&self, c: &SmppCredential) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO smpp_credentials (system_id, account_id, password_hash, allowed_ips, max_binds, throughput, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (system_id) DO NOTHING",
            values![
                &c.system_id,
                c.account_id,
                &c.password_hash,
                c.allowed_ips.as_ref().map(|a| serde_json::json!(a).to_string()),
                c.max_binds.map(i64::from),
                c.throughput,
                c.created_at,
            ],
        );
        Ok(n.await? == 1)
    }

    async fn smpp_credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>> {
        let sql = format!("SELECT {COLUMNS} FROM smpp_credentials WHERE account_id = ? ORDER BY system_id");
        self.query(&sql, values![account]).await?.iter().map(credential_of).collect()
    }

    async fn smpp_credential(&self, system_id: &str) -> Result<Option<SmppCredential>> {
        let sql = format!("SELECT {COLUMNS} FROM smpp_credentials WHERE system_id = ?");
        self.query_one(&sql, values![system_id]).await?.as_ref().map(credential_of).transpose()
    }

    async fn delete_smpp_credential(&self, account: AccountId, system_id: &str) -> Result<bool> {
        let n = self.execute(
            "DELETE FROM smpp_credentials WHERE account_id = ? AND system_id = ?",
            values![account, system_id],
        );
        Ok(n.await? == 1)
    }
}
