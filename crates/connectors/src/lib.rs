//! Connectors hand messages to carriers and bring back what carriers say: the [`Connector`] trait, the events a
//! connector reports ([`ConnectorEvent`]), and the built-in simulated carrier network ([`sim`]). SMPP client
//! connectors join them with the SMPP issue.

pub mod sim;
pub mod smpp;

use async_trait::async_trait;
use smsgate_core::{Message, Timestamp};

/// Why a submission did not go through: what the carrier answered, or what kept the message from it. Each kind
/// says what becomes of the message (the engine's `policy` decides on it, never on the code's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// It will never take this message (a bad destination, a barred sender): the message fails.
    #[error("{code}: {detail}")]
    Permanent { code: String, detail: String },
    /// The carrier asked us to slow down (`throttled`, `esme_rthrottled`, `esme_rmsgqful`): it answered, so it is
    /// up; the message waits and goes again without spending an attempt.
    #[error("{code}: {detail}")]
    Throttled { code: String, detail: String },
    /// No session was bound, so nothing went out ([`NOT_BOUND`]): the link's failure, not the message's.
    #[error("not_bound: {detail}")]
    NotBound { detail: String },
    /// The submit went out and the session closed before the carrier answered ([`CONNECTION_LOST`]).
    #[error("connection_lost: {detail}")]
    ConnectionLost { detail: String },
    /// Not now, for another reason (no answer in time, a carrier's system error): tried again later.
    #[error("{code}: {detail}")]
    Temporary { code: String, detail: String },
}

/// The code of [`SubmitError::NotBound`], as messages record it.
pub const NOT_BOUND: &str = "not_bound";

/// The code of [`SubmitError::ConnectionLost`], as messages record it.
pub const CONNECTION_LOST: &str = "connection_lost";

impl SubmitError {
    /// The error code a message records (`invalid_destination`, `esme_rthrottled`, `not_bound`, ...).
    pub fn code(&self) -> &str {
        match self {
            SubmitError::Permanent { code, .. } | SubmitError::Throttled { code, .. } => code,
            SubmitError::Temporary { code, .. } => code,
            SubmitError::NotBound { .. } => NOT_BOUND,
            SubmitError::ConnectionLost { .. } => CONNECTION_LOST,
        }
    }

    /// What happened, for the message's journey.
    pub fn detail(&self) -> &str {
        match self {
            SubmitError::Permanent { detail, .. }
            | SubmitError::Throttled { detail, .. }
            | SubmitError::NotBound { detail }
            | SubmitError::ConnectionLost { detail }
            | SubmitError::Temporary { detail, .. } => detail,
        }
    }

    /// Whether the link to the carrier was down, rather than the carrier refusing or failing this message.
    pub fn is_link_down(&self) -> bool {
        matches!(self, SubmitError::NotBound { .. } | SubmitError::ConnectionLost { .. })
    }

    /// Whether the carrier answered, for its own part working (a refusal of this message, a request to slow
    /// down): what a connector's health counts as a success.
    pub fn carrier_answered(&self) -> bool {
        matches!(self, SubmitError::Permanent { .. } | SubmitError::Throttled { .. })
    }
}

/// Settings a connector cannot be built from: what is wrong, in a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// A delivery receipt: the final (or intermediate) state a carrier reports for a message it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The connector that took the message.
    pub connector: String,
    /// The id the carrier gave the message when it took it.
    pub carrier_id: String,
    /// Other forms the id may have had when the carrier took the message (carriers answer a submit in hex and
    /// write its receipt in decimal, or the other way round), tried in order when `carrier_id` matches nothing.
    pub alternatives: Vec<String>,
    pub state: ReceiptState,
    /// The carrier's error code, if any.
    pub error_code: Option<String>,
    pub at: Timestamp,
    /// The receipt as the carrier wrote it, for the journey.
    pub detail: String,
}

/// What a receipt says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    Delivered,
    Undelivered,
    Expired,
    Rejected,
}

/// A message from a handset to one of our numbers or senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub connector: String,
    /// The handset's number.
    pub from: String,
    /// The number or sender it was sent to.
    pub to: String,
    pub body: String,
    pub at: Timestamp,
}

/// What connectors report, as it happens.
#[derive(Debug)]
pub enum ConnectorEvent {
    Receipt(Receipt),
    Inbound(Inbound),
    /// An event its carrier waits to hear we have kept: `kept` says whether it was written (or settled for good,
    /// as a receipt that matches nothing after its wait), so the connector answers the carrier OK only then, and
    /// otherwise asks it to send the event again.
    Durable(Box<ConnectorEvent>, tokio::sync::oneshot::Sender<bool>),
}

/// A way to a carrier.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// The name messages record as their `connector`.
    fn name(&self) -> &str;

    /// Puts the connector to work when it comes into force (an SMPP connector binds); building one only to check
    /// its settings does not start it. Called once; later calls do nothing.
    fn start(&self) {}

    /// What the connector can tell of its link to the carrier now (an SMPP connector: its binds), for the API.
    fn link(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Hands one message to the carrier, every part through this connector; on success, the carrier's id for each
    /// part, in order (one for a message of one part). A message is taken only when all its parts are.
    async fn submit(&self, message: &Message) -> Result<Vec<String>, SubmitError>;
}

/// The connector kinds this version builds.
pub const KINDS: &[&str] = &["sim", "smpp"];

/// What connectors are built with: the simulated network every `sim` connector submits into, and where the
/// others report receipts and inbound messages.
#[derive(Debug, Clone)]
pub struct Kit {
    pub sim: std::sync::Arc<sim::SimNetwork>,
    pub events: tokio::sync::mpsc::Sender<ConnectorEvent>,
}

impl Kit {
    /// A kit whose connectors report where the simulated network does.
    pub fn new(sim: std::sync::Arc<sim::SimNetwork>) -> Kit {
        let events = sim.events();
        Kit { sim, events }
    }

    /// A connector of `kind` named `name`, from its kind's settings (a JSON object). Bad settings or an unknown
    /// kind are an error for people: it says what is wrong.
    pub fn build(
        &self,
        name: &str,
        kind: &str,
        settings: serde_json::Value,
    ) -> Result<std::sync::Arc<dyn Connector>, SettingsError> {
        match kind {
            "sim" => {
                let settings = sim::SimSettings::from_json(settings)?;
                Ok(std::sync::Arc::new(sim::SimConnector::new(name, self.sim.clone(), &settings)))
            }
            "smpp" => {
                let settings = smpp::SmppSettings::from_json(settings)?;
                Ok(std::sync::Arc::new(smpp::SmppConnector::new(name, settings, self.events.clone())))
            }
            other => Err(SettingsError(format!("unknown connector kind {other:?}; this version has {KINDS:?}"))),
        }
    }
}

/// What tests of connectors (here and in other crates) submit.
#[doc(hidden)]
pub mod testing {
    use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};

    /// A message from "Acme" to `to` being sent (first attempt).
    pub fn message(to: &str, body: &str) -> Message {
        Message {
            id: MessageId::generate(),
            account_id: AccountId::generate(),
            direction: Direction::Outbound,
            to: to.into(),
            from: "Acme".into(),
            body: body.into(),
            encoding: "gsm7".into(),
            segments: 1,
            price_micros: None,
            connector: None,
            carrier_id: None,
            status: Status::Sending,
            error_code: None,
            reference: None,
            callback_url: None,
            callback_statuses: None,
            send_at: None,
            expires_at: None,
            attempts: 1,
            category: Default::default(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }
}
