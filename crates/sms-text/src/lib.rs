//! SMS text: how characters become what a short message carries, and back.
//!
//! - [`gsm7`]: the GSM 7-bit default alphabet and extension table of 3GPP TS 23.038, the national language
//!   locking-shift and single-shift tables ([`Language`]), septet packing with fill bits.
//! - [`ucs2`]: UTF-16BE with surrogate pairs.
//! - [`udh`]: the user data header of TS 23.040 (concatenation, national language shifts).
//! - [`plan`]: picks the cheapest allowed encoding and splits a text into segments ([`plan::plan`]).
//! - [`smart`]: optional replacement of Unicode look-alikes by GSM characters.
//! - [`reassembly`]: puts inbound concatenated parts back together.
//! - [`decode`]: user data from an SMPP PDU back to text, by `data_coding`.
//!
//! # Input safety
//! Every decoder here takes arbitrary bytes: it never panics, and where bytes are undefined it either returns an
//! error that says why or decodes leniently (U+FFFD), as each function's documentation says. The crate does no
//! I/O and depends on no other crate of smsgate.

pub mod decode;
#[doc(hidden)]
pub mod fuzzing;
pub mod gsm7;
pub mod plan;
pub mod reassembly;
pub mod smart;
mod tables;
pub mod ucs2;
pub mod udh;

pub use gsm7::Charset;
pub use plan::{Encoding, Options, Plan, PlanError, Reference, Segment, plan};
pub use tables::Language;
