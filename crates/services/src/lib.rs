//! Application services: what smsgate does for an account, in one place, between the front ends and the store.
//! REST, the SMPP server — and the dashboard and the Twilio-compatible API to come — call these, never the store:
//! so every way in applies the same checks, the same admission and the same writes.
//!
//! - [`Messages`]: submit one or many (through the engine's [`smsgate_engine::ingress::Ingress`]: admission, a
//!   group commit, straight to the dispatcher when it has room), cancel (through the engine's group writer),
//!   replace, read, list, callbacks;
//! - [`Admin`]: accounts and keys, connectors and routes, the routes an account may use, SMPP credentials,
//!   webhook settings, seeding from the config file; numbers and sender IDs ([`senders`]).
//!
//! Errors are [`ServiceError`]s: a kind (not found, invalid, conflict, forbidden; or the store's or engine's
//! failure) and a stable code, which each front end maps to its own answer.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod automations;
pub mod binds;
pub mod campaigns;
pub mod contacts;
pub mod conversations;
mod error;
pub mod imports;
pub mod keys;
pub mod links;
pub mod messages;
pub mod senders;
pub mod templates;
pub mod users;

pub use admin::{Admin, CredentialSpec, MatchSpec, RouteSpec, TargetSpec};
pub use analytics::Analytics;
pub use automations::{AutomationSpec, AutomationView, Automations, EventOutcome, EventSpec};
pub use campaigns::{Audience, CampaignSpec, CampaignView, Campaigns, RunView, Schedule, Stats};
pub use contacts::{ContactInfo, ContactPatch, ContactSpec, Contacts, Export, SegmentFilter};
pub use conversations::{ConversationView, Conversations};
pub use error::{Result, ServiceError};
pub use keys::{Authenticated, KeySpec, NewKey};
pub use messages::{Messages, Submitted, TextPlan};
pub use senders::{NumberSpec, SenderClass};
pub use templates::{PreviewFor, TemplatePatch, TemplateSpec, Templates};
pub use users::{Actor, NewSession, UserPatch, UserSpec, Users};
