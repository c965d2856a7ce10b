//! SMPP 3.4: the protocol applications, gateways and carriers speak.
//!
//! - [`pdu`]: every PDU of SMPP 3.4 ([`Pdu`], [`Body`]), sans-IO [`Pdu::decode`] and [`Pdu::encode`].
//! - [`tlv`]: every SMPP 3.4 optional parameter, typed; unknown ones kept octet for octet.
//! - [`field`]: field types with the specification's limits, and the decode and encode errors.
//! - [`status`]: `command_status` as the named enum [`CommandStatus`].
//! - [`frame`]: cutting a byte stream into PDUs; [`codec`] wraps it for tokio (feature `tokio`).
//! - [`receipt`]: delivery receipt texts, message states, message id forms.
//! - [`time`]: SMPP absolute and relative times.
//!
//! # Input safety
//! [`Pdu::decode`], [`frame::frame_len`], [`receipt::Receipt::parse`] and [`time::SmppTime::parse`] take any
//! input and never panic: no `unwrap`, no unchecked index on received octets. A malformed body inside a well-framed
//! PDU is a [`PduError`] that carries the header, so a session can answer it ([`PduError::response`]) and go on;
//! only an impossible `command_length` ([`frame::FrameError`]) makes a stream unreadable. Fuzz targets in `fuzz/`
//! and the random-input tests hold this.
//!
//! The crate does no I/O below the codec and depends on no other crate of smsgate.

#[cfg(feature = "tokio")]
pub mod codec;
pub mod field;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod pdu;
pub mod receipt;
pub mod status;
pub mod time;
pub mod tlv;

pub use field::{COctetString, DecodeError, EncodeError, Octets, ShortMessage, TimeString};
pub use pdu::{Body, Header, Pdu, PduError};
pub use status::CommandStatus;
pub use tlv::{Tlv, Tlvs};
