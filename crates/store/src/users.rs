//! Dashboard users and their signed-in sessions. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::access::Role;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::corrupt;
use crate::sql::{Database, Row, Statement, values};
use crate::tenancy::{ACCOUNT_COLUMNS, Account, account_of};

/// A person who signs in to the dashboard, in one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub account_id: AccountId,
    /// Lower case; unique across the server.
    pub email: String,
    /// Argon2id, PHC string.
    pub password_hash: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
    /// Wrong passwords since the last right one.
    pub failed_sign_ins: i64,
    /// Until when sign-in is refused after too many wrong passwords.
    pub locked_until: Option<Timestamp>,
}

/// A signed-in session: the hash of its token (the cookie's value), its CSRF token and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: String,
    pub user_id: String,
    pub csrf_token: String,
    pub created_at: Timestamp,
    /// When it was last used (written at most once a minute).
    pub seen_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A session with its user and the user's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub session: Session,
    pub user: User,
    pub account: Account,
}

/// Users and sessions.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user; false when the email is another user's.
    async fn insert_user(&self, user: &User) -> Result<bool>;

    /// An account's user by id.
    async fn user(&self, account: AccountId, id: &str) -> Result<Option<User>>;

    /// The user with this email (lower case), in whichever account.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;

    /// An account's users, by email.
    async fn users(&self, account: AccountId) -> Result<Vec<User>>;

    /// Writes a user's role and password hash (by id and account); false if there is none.
    async fn update_user(&self, user: &User) -> Result<bool>;

    /// Deletes an account's user and every session of theirs; false if there was none.
    async fn delete_user(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Records a sign-in attempt's outcome: a right password clears the failures and sets `last_sign_in_at`; a
    /// wrong one counts, and `locked_until` (when given) refuses sign-in until then.
    async fn record_sign_in(
        &self,
        user_id: &str,
        succeeded: bool,
        locked_until: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()>;

    /// Stores a new session.
    async fn insert_session(&self, session: &Session) -> Result<()>;

    /// The unexpired session with this token hash, with its user and account.
    async fn signed_in(&self, token_hash: &str, now: Timestamp) -> Result<Option<SignedIn>>;

    /// Moves a session's `seen_at` and `expires_at` on.
    async fn touch_session(&self, token_hash: &str, seen_at: Timestamp, expires_at: Timestamp) -> Result<()>;

    /// Ends a session; false if there was none.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;

    /// Ends every session of a user but `keep` (when given); how many ended.
    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64>;

    /// Deletes sessions that expired before `now`; how many.
    async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64>;

    /// How many users the server has (the first may be created from the sign-in page).
    async fn user_count(&self) -> Result<i64>;
}

const COLUMNS: &str = "u.id AS user_id, u.account_id AS user_account, u.email, u.password_hash, u.role, \
     u.created_at AS user_created, u.updated_at AS user_updated, u.last_sign_in_at, u.failed_sign_ins, u.locked_until";

fn user_of(r: &Row) -> Result<User> {
    let role: String = r.get("role")?;
    Ok(User {
        id: r.get("user_id")?,
        account_id: r.account_id("user_account")?,
        email: r.get("email")?,
        password_hash: r.get("password_hash")?,
        role: Role::parse(&role).map_err(|e| corrupt(format!("user role: {e}")))?,
        created_at: r.timestamp("user_created")?,
        updated_at: r.timestamp("user_updated")?,
        last_sign_in_at: r.get::<Option<i64>>("last_sign_in_at")?.map(Timestamp),
        failed_sign_ins: r.get("failed_sign_ins")?,
        locked_until: r.get::<Option<i64>>("locked_until")?.map(Timestamp),
    })
}

const SESSION_COLUMNS: &str = "s.token_hash, s.user_id AS session_user, s.csrf_token, s.created_at AS session_created, \
     s.seen_at, s.expires_at";

fn session_of(r: &Row) -> Result<Session> {
    Ok(Session {
        token_hash: r.get("token_hash")?,
        user_id: r.get("session_user")?,
        csrf_token: r.get("csrf_token")?,
        created_at: r.timestamp("session_created")?,
        seen_at: r.timestamp("seen_at")?,
        expires_at: r.timestamp("expires_at")?,
    })
}

#[async_trait]
impl<D: Database> UserStore for D {
    async fn insert_user(&self, u: &User) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO users (id, account_id, email, password_hash, role, created_at, updated_at, failed_sign_ins) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (email) DO NOTHING",
            values![&u.id, u.account_id, &u.email, &u.password_hash, u.role.as_str(), u.created_at, u.updated_at],
        );
        Ok(n.await? == 1)
    }

    async fn user(&self, account: AccountId, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users u WHERE u.id = ? AND u.account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(user_of).transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users u WHERE u.email = ?");
        self.query_one(&sql, values![email]).await?.as_ref().map(user_of).transpose()
    }

    async fn users(&self, account: AccountId) -> Result<Vec<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users u WHERE u.account_id = ? ORDER BY u.email");
        self.query(&sql, values![account]).await?.iter().map(user_of).collect()
    }

    async fn update_user(&self, u: &User) -> Result<bool> {
        let n = self.execute(
            "UPDATE users SET role = ?, password_hash = ?, updated_at = ? WHERE id = ? AND account_id = ?",
            values![u.role.as_str(), &u.password_hash, u.updated_at, &u.id, u.account_id],
        );
        Ok(n.await? == 1)
    }

    async fn delete_user(&self, account: AccountId, id: &str) -> Result<bool> {
        let changed = self
            .transaction(vec![
                Statement {
                    sql: "DELETE FROM user_sessions WHERE user_id IN (SELECT id FROM users WHERE id = ? AND account_id = ?)"
                        .into(),
                    params: values![id, account],
                },
                Statement { sql: "DELETE FROM users WHERE id = ? AND account_id = ?".into(), params: values![id, account] },
            ])
            .await?;
        Ok(changed.get(1).copied() == Some(1))
    }

    async fn record_sign_in(
        &self,
        user_id: &str,
        succeeded: bool,
        locked_until: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        if succeeded {
            self.execute(
                "UPDATE users SET failed_sign_ins = 0, locked_until = NULL, last_sign_in_at = ? WHERE id = ?",
                values![now, user_id],
            )
            .await?;
        } else {
            self.execute(
                "UPDATE users SET failed_sign_ins = failed_sign_ins + 1, locked_until = ? WHERE id = ?",
                values![locked_until.map(|t| t.0), user_id],
            )
            .await?;
        }
        Ok(())
    }

    async fn insert_session(&self, s: &Session) -> Result<()> {
        self.execute(
            "INSERT INTO user_sessions (token_hash, user_id, csrf_token, created_at, seen_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            values![&s.token_hash, &s.user_id, &s.csrf_token, s.created_at, s.seen_at, s.expires_at],
        )
        .await?;
        Ok(())
    }

    async fn signed_in(&self, token_hash: &str, now: Timestamp) -> Result<Option<SignedIn>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {COLUMNS}, {ACCOUNT_COLUMNS} FROM user_sessions s \
             JOIN users u ON u.id = s.user_id JOIN accounts a ON a.id = u.account_id \
             WHERE s.token_hash = ? AND s.expires_at > ?"
        );
        let Some(row) = self.query_one(&sql, values![token_hash, now]).await? else {
            return Ok(None);
        };
        Ok(Some(SignedIn { session: session_of(&row)?, user: user_of(&row)?, account: account_of(&row)? }))
    }

    async fn touch_session(&self, token_hash: &str, seen_at: Timestamp, expires_at: Timestamp) -> Result<()> {
        self.execute(
            "UPDATE user_sessions SET seen_at = ?, expires_at = ? WHERE token_hash = ?",
            values![seen_at, expires_at, token_hash],
        )
        .await?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM user_sessions WHERE token_hash = ?", values![token_hash]).await? == 1)
    }

    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64> {
        self.execute(
            "DELETE FROM user_sessions WHERE user_id = ? AND token_hash <> ?",
            values![user_id, keep.unwrap_or("")],
        )
        .await
    }

    async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64> {
        self.execute("DELETE FROM user_sessions WHERE expires_at <= ?", values![now]).await
    }

    async fn user_count(&self) -> Result<i64> {
        let row = self.query_one("SELECT COUNT(*) AS n FROM users", values![]).await?;
        row.map_or(Ok(0), |r| r.get("n"))
    }
}
