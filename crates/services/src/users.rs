//! [`Users`]: the people who sign in to the dashboard, and their sessions. A user belongs to one account and has a
//! [`Role`]; a password hashed with Argon2id; a session is a random token the browser keeps in a cookie (only its
//! keyed hash is stored, as for API keys) and a CSRF token every state-changing request carries beside it.
//!
//! Sessions end on sign-out, after [`SESSION_IDLE`] without a request, and at the latest [`SESSION_MAX`] after
//! sign-in. After [`MAX_FAILED_SIGN_INS`] wrong passwords in a row, the user's sign-in waits [`LOCKOUT`].

use smsgate_core::access::{Role, Scope, Scopes, hash_password, verify_password};
use smsgate_core::{AccountId, Timestamp};
use smsgate_store::{SignedIn, User};

use crate::admin::Admin;
use crate::error::{Result, ServiceError};

/// A session ends after this long without a request (milliseconds): 12 hours.
pub const SESSION_IDLE: i64 = 12 * 3_600_000;
/// A session ends this long after sign-in, used or not (milliseconds): 7 days.
pub const SESSION_MAX: i64 = 7 * 24 * 3_600_000;
/// How stale a session's `seen_at` may be before a request writes it again (milliseconds).
const TOUCH_EVERY: i64 = 60_000;
/// Wrong passwords in a row before sign-in waits.
pub const MAX_FAILED_SIGN_INS: i64 = 5;
/// How long sign-in waits after too many wrong passwords (milliseconds): 15 minutes.
pub const LOCKOUT: i64 = 15 * 60_000;
/// The fewest and most characters of a password.
pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 256;
/// The most characters of an email address.
pub const MAX_EMAIL: usize = 254;

/// Who asks: an API key with its scopes, or a signed-in user.
#[derive(Debug, Clone)]
pub enum Actor {
    Key { account: smsgate_store::Account, scopes: Scopes },
    User { account: smsgate_store::Account, user: User },
}

impl Actor {
    pub fn account(&self) -> &smsgate_store::Account {
        match self {
            Actor::Key { account, .. } | Actor::User { account, .. } => account,
        }
    }

    /// Whether the actor may create, change or remove users of `account` with `role`: a key with the `manage`
    /// scope of that account (or the operator's `admin` scope), a user of that account whose role manages `role`
    /// (or an operator user, in any account).
    fn may_manage(&self, account: AccountId, role: Role) -> Result<()> {
        let own = self.account().id == account;
        let operator = self.account().is_admin;
        let allowed = match self {
            Actor::Key { scopes, .. } => {
                (own && scopes.contains(Scope::Manage)) || (operator && scopes.contains(Scope::Admin))
            }
            Actor::User { user, .. } => user.role.may_manage(role) && (own || operator && user.role >= Role::Admin),
        };
        if allowed {
            Ok(())
        } else if own || operator {
            Err(ServiceError::forbidden("forbidden", format!("your role cannot manage {} users", role.as_str())))
        } else {
            Err(ServiceError::not_found("not_found", "no such account"))
        }
    }
}

/// A new user, as a caller gives it.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// The account; `None`: the caller's. Only the operator names another.
    pub account_id: Option<AccountId>,
    pub email: String,
    pub password: String,
    pub role: Role,
}

/// A change to a user: what is given replaces what is there.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub role: Option<Role>,
    pub password: Option<String>,
}

/// A sign-in that succeeded: the token for the cookie (shown once) and what it signed in.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub signed_in: SignedIn,
}

/// Users and sessions.
#[derive(Debug, Clone)]
pub struct Users {
    admin: Admin,
}

/// An email address as kept: trimmed and lower case, if it looks like one (one `@`, something either side, a dot
/// in the domain, no spaces or control characters).
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= MAX_EMAIL
        && email.split('@').count() == 2
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email)
    } else {
        Err(ServiceError::invalid("invalid_email", format!("{email:?} is not an email address")))
    }
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "invalid_password",
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ))
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Argon2 is slow on purpose: off the async threads.
async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ServiceError::Store(smsgate_store::StoreError::Stopped(format!("hashing a password: {e}"))))
}

async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
}

/// What a password given with an unknown email is checked against, so that the answer takes as long as for a
/// wrong password: a hash of a random password, made once.
fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token())).clone()
}

impl Users {
    pub fn new(admin: Admin) -> Users {
        Users { admin }
    }

    /// Creates a user. The email must be nobody's (`email_taken`).
    pub async fn create(&self, actor: &Actor, spec: UserSpec) -> Result<User> {
        let account = spec.account_id.unwrap_or(actor.account().id);
        actor.may_manage(account, spec.role)?;
        self.admin.account(account).await?;
        let email = normalize_email(&spec.email)?;
        check_password(&spec.password)?;
        let now = self.admin.now();
        let user = User {
            id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
            account_id: account,
            email,
            password_hash: hash(spec.password).await?,
            role: spec.role,
            created_at: now,
            updated_at: now,
            last_sign_in_at: None,
            failed_sign_ins: 0,
            locked_until: None,
        };
        if !self.admin.store.insert_user(&user).await? {
            return Err(ServiceError::conflict("email_taken", format!("{} already has a user", user.email)));
        }
        Ok(user)
    }

    /// An account's users.
    pub async fn list(&self, account: AccountId) -> Result<Vec<User>> {
        Ok(self.admin.store.users(account).await?)
    }

    /// An account's user.
    pub async fn get(&self, account: AccountId, id: &str) -> Result<User> {
        self.admin.store.user(account, id).await?.ok_or_else(|| ServiceError::not_found("not_found", "no such user"))
    }

    /// Changes a user's role or password. Users change their own password; a role is changed by someone who
    /// manages both the old and the new one, never one's own, and an account keeps an owner. A new password ends
    /// the user's other sessions (all of them when someone else set it).
    pub async fn update(&self, actor: &Actor, id: &str, patch: UserPatch, session: Option<&str>) -> Result<User> {
        let account = actor.account().id;
        let mut user = self.get(account, id).await?;
        let own = matches!(actor, Actor::User { user: me, .. } if me.id == user.id);
        if let Some(role) = patch.role
            && role != user.role
        {
            if own {
                return Err(ServiceError::forbidden("forbidden", "you cannot change your own role"));
            }
            actor.may_manage(account, user.role)?;
            actor.may_manage(account, role)?;
            if user.role == Role::Owner {
                self.keep_an_owner(account, &user.id).await?;
            }
            user.role = role;
        }
        let new_password = patch.password.is_some();
        if let Some(password) = patch.password {
            if !own {
                actor.may_manage(account, user.role)?;
            }
            check_password(&password)?;
            user.password_hash = hash(password).await?;
        }
        user.updated_at = self.admin.now();
        if !self.admin.store.update_user(&user).await? {
            return Err(ServiceError::not_found("not_found", "no such user"));
        }
        // A role holds at the next request (sessions read it each time); a password ends the other sessions.
        if new_password {
            let keep = if own { session.map(|token| self.admin.key_hash(token)) } else { None };
            self.admin.store.delete_user_sessions(&user.id, keep.as_deref()).await?;
        }
        Ok(user)
    }

    /// A signed-in user's own new password, given with the one they have (`wrong_password` otherwise); their other
    /// sessions end.
    pub async fn change_password(&self, token: &str, current: &str, new: &str) -> Result<()> {
        let Some(signed_in) = self.session(token).await? else {
            return Err(ServiceError::Unauthorized { code: "unauthorized", message: "not signed in".into() });
        };
        if !verify(current.to_string(), signed_in.user.password_hash.clone()).await {
            return Err(ServiceError::forbidden("wrong_password", "the current password is not that"));
        }
        check_password(new)?;
        let mut user = signed_in.user;
        user.password_hash = hash(new.to_string()).await?;
        user.updated_at = self.admin.now();
        if !self.admin.store.update_user(&user).await? {
            return Err(ServiceError::not_found("not_found", "no such user"));
        }
        self.admin.store.delete_user_sessions(&user.id, Some(&self.admin.key_hash(token))).await?;
        Ok(())
    }

    /// Removes a user and ends their sessions. An account keeps an owner.
    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<()> {
        let account = actor.account().id;
        let user = self.get(account, id).await?;
        actor.may_manage(account, user.role)?;
        if user.role == Role::Owner {
            self.keep_an_owner(account, &user.id).await?;
        }
        if !self.admin.store.delete_user(account, id).await? {
            return Err(ServiceError::not_found("not_found", "no such user"));
        }
        Ok(())
    }

    async fn keep_an_owner(&self, account: AccountId, leaving: &str) -> Result<()> {
        let others = self.admin.store.users(account).await?;
        if others.iter().any(|u| u.role == Role::Owner && u.id != leaving) {
            Ok(())
        } else {
            Err(ServiceError::conflict("last_owner", "an account keeps at least one owner"))
        }
    }

    /// Signs in by email and password: a new session, or `invalid_credentials` (the same for an unknown email and
    /// a wrong password), or `too_many_attempts` while the user's sign-in waits after wrong passwords.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<NewSession> {
        let wrong =
            || ServiceError::Unauthorized { code: "invalid_credentials", message: "wrong email or password".into() };
        let now = self.admin.now();
        let email = normalize_email(email).unwrap_or_default();
        let found = if email.is_empty() { None } else { self.admin.store.user_by_email(&email).await? };
        let Some(user) = found else {
            let decoy = tokio::task::spawn_blocking(decoy_hash).await.unwrap_or_default();
            verify(password.to_string(), decoy).await;
            return Err(wrong());
        };
        if let Some(until) = user.locked_until
            && until > now
        {
            return Err(ServiceError::RateLimited {
                retry_after: std::time::Duration::from_millis(u64::try_from(until.0 - now.0).unwrap_or(0)),
            });
        }
        if !verify(password.to_string(), user.password_hash.clone()).await {
            let failed = user.failed_sign_ins + 1;
            let lock = (failed >= MAX_FAILED_SIGN_INS).then_some(Timestamp(now.0 + LOCKOUT));
            self.admin.store.record_sign_in(&user.id, false, lock, now).await?;
            if lock.is_some() {
                tracing::warn!(user = %user.id, "sign-in locked after {failed} wrong passwords");
            }
            return Err(wrong());
        }
        self.admin.store.record_sign_in(&user.id, true, None, now).await?;
        let token = random_token();
        let session = smsgate_store::Session {
            token_hash: self.admin.key_hash(&token),
            user_id: user.id.clone(),
            csrf_token: random_token(),
            created_at: now,
            seen_at: now,
            expires_at: Timestamp(now.0 + SESSION_IDLE.min(SESSION_MAX)),
        };
        self.admin.store.insert_session(&session).await?;
        let signed_in = self
            .admin
            .store
            .signed_in(&session.token_hash, now)
            .await?
            .ok_or_else(|| ServiceError::not_found("not_found", "the user was removed"))?;
        Ok(NewSession { token, signed_in })
    }

    /// The session a token (a cookie's value) is, if it has not ended; a used session's end moves on.
    pub async fn session(&self, token: &str) -> Result<Option<SignedIn>> {
        let now = self.admin.now();
        let hash = self.admin.key_hash(token);
        let Some(mut found) = self.admin.store.signed_in(&hash, now).await? else {
            return Ok(None);
        };
        if now.0 - found.session.seen_at.0 >= TOUCH_EVERY {
            let expires = Timestamp((now.0 + SESSION_IDLE).min(found.session.created_at.0 + SESSION_MAX));
            self.admin.store.touch_session(&hash, now, expires).await?;
            found.session.seen_at = now;
            found.session.expires_at = expires;
        }
        Ok(Some(found))
    }

    /// Ends a session (signing out); nothing if it had ended.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        self.admin.store.delete_session(&self.admin.key_hash(token)).await?;
        Ok(())
    }

    /// Deletes sessions that have ended; how many.
    pub async fn purge_sessions(&self) -> Result<u64> {
        Ok(self.admin.store.delete_expired_sessions(self.admin.now()).await?)
    }

    /// Deletes ended sessions every hour until `shutdown`.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.purge_sessions().await {
                tracing::warn!(error = %e, "deleting ended sessions failed; trying again in an hour");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            }
        }
    }

    /// Whether the server has no user yet.
    pub async fn none_yet(&self) -> Result<bool> {
        Ok(self.admin.store.user_count().await? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_kept_in_one_form() {
        assert_eq!(normalize_email("  Ann@Clinic.Example ").unwrap(), "ann@clinic.example");
        for bad in ["", "ann", "ann@", "@clinic.example", "ann@clinic", "a b@c.de", "a@b@c.de", "ann@.example"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
