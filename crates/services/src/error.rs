//! [`ServiceError`]: why a service said no, in kinds every front end maps to its own answer (an HTTP status, an
//! SMPP `command_status`), each with a stable machine-readable code.

use smsgate_core::admission::Rejection;
use smsgate_engine::EngineError;
use smsgate_store::StoreError;

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// What the caller named does not exist, or is not the caller's to see.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request is invalid: a field, a number, a setting.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Admission refused a message: its code (`invalid_destination`, `empty_body`, ...) and why.
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// It clashes with what is there: a name taken, a message past canceling, a key reused.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Who asks could not be told: a wrong email or password.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Only the admin account may do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Over a rate the operator set (`rate_limited`): how long until it could go.
    #[error("over the account's limit; try again in {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    /// The store failed; nothing of the call was kept.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine could not record it (it is stopping, or its store failed).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ServiceError {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::NotFound { code, message: message.into() }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::Invalid { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::Conflict { code, message: message.into() }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::Forbidden { code, message: message.into() }
    }

    /// The code front ends show: the kind's own, or `internal` for a failure of the store or the engine.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::NotFound { code, .. }
            | ServiceError::Invalid { code, .. }
            | ServiceError::Conflict { code, .. }
            | ServiceError::Forbidden { code, .. }
            | ServiceError::Unauthorized { code, .. } => code,
            ServiceError::Rejected(r) => r.code.as_str(),
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::Store(_) | ServiceError::Engine(_) => "internal",
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
