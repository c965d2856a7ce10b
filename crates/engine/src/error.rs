//! [`EngineError`]: why the engine could not do what it was asked.

use std::sync::Arc;

use smsgate_store::StoreError;

/// Why a write through the engine (a status change, a receipt, a message stored in a group) or a reload failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine is not running, or stopped while the write waited: nothing was written.
    #[error("the engine is not running")]
    NotRunning,
    /// The store failed (after the tries a write gets); nothing of the write was kept. Shared by every write of
    /// the group that failed with it.
    #[error("store: {0}")]
    Store(#[source] Arc<StoreError>),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> EngineError {
        EngineError::Store(Arc::new(e))
    }
}
