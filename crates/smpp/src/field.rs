//! The field types of SMPP 3.4 (section 3.1): integers, C-Octet strings with a maximum length, the fixed-length
//! time strings, and `sm_length` + `short_message`; with the reader and writer every PDU body is built from.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::status::CommandStatus;

/// Why a PDU body could not be decoded. `field` names the field by its SMPP name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {kind}")]
pub struct DecodeError {
    pub field: &'static str,
    pub kind: DecodeErrorKind,
}

/// What was wrong with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The body ended before the field did.
    #[error("body ends before this field does")]
    Truncated,
    /// A C-Octet string has no NUL terminator within its maximum length.
    #[error("no NUL terminator within {max} octets")]
    Unterminated { max: usize },
    /// A fixed-length C-Octet string (a time) is neither empty nor 16 characters.
    #[error("{len} characters; must be 0 or 16")]
    BadTimeLength { len: usize },
    /// A length is above the specification's maximum.
    #[error("length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// A TLV value has a length its type does not allow.
    #[error("TLV {tag:#06x} has length {len}; {expected}")]
    TlvLength { tag: u16, len: usize, expected: &'static str },
    /// A value outside the field's domain.
    #[error("invalid value {value:#x}")]
    InvalidValue { value: u32 },
    /// Octets left after the last field of a PDU that carries no TLVs.
    #[error("{count} unexpected octets after the last field")]
    Trailing { count: usize },
}

impl DecodeError {
    pub(crate) fn new(field: &'static str, kind: DecodeErrorKind) -> Self {
        DecodeError { field, kind }
    }

    /// The `command_status` a peer should get back for this error (SMPP 3.4 5.1.3).
    pub fn status(&self) -> CommandStatus {
        use CommandStatus as S;
        match (&self.kind, self.field) {
            (DecodeErrorKind::TlvLength { .. }, _) => S::ESME_RINVPARLEN,
            (_, "tlvs") => S::ESME_RINVOPTPARSTREAM,
            (DecodeErrorKind::Truncated | DecodeErrorKind::Trailing { .. }, _) => S::ESME_RINVCMDLEN,
            (_, "system_id") => S::ESME_RINVSYSID,
            (_, "password") => S::ESME_RINVPASWD,
            (_, "system_type") => S::ESME_RINVSYSTYP,
            (_, "service_type") => S::ESME_RINVSERTYP,
            (_, "source_addr" | "esme_addr" | "address_range") => S::ESME_RINVSRCADR,
            (_, "destination_addr" | "dest_address") => S::ESME_RINVDSTADR,
            (_, "message_id" | "receipted_message_id") => S::ESME_RINVMSGID,
            (_, "schedule_delivery_time") => S::ESME_RINVSCHED,
            (_, "validity_period") => S::ESME_RINVEXPIRY,
            (_, "short_message" | "sm_length") => S::ESME_RINVMSGLEN,
            (_, "dl_name") => S::ESME_RINVDLNAME,
            (_, "number_of_dests") => S::ESME_RINVNUMDESTS,
            (_, "dest_flag") => S::ESME_RINVDESTFLAG,
            _ => S::ESME_RINVPARLEN,
        }
    }
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than SMPP 3.4 allows.
    #[error("{field}: length {len} exceeds the maximum of {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    /// A C-Octet string contains a NUL octet.
    #[error("{field}: contains a NUL octet")]
    ContainsNul { field: &'static str },
    /// A time string is neither empty nor 16 characters.
    #[error("{field}: {len} characters; must be 0 or 16")]
    BadTimeLength { field: &'static str, len: usize },
    /// The PDU is longer than a `command_length` can say.
    #[error("PDU of {len} octets is too long")]
    PduTooLong { len: usize },
}

/// A cursor over a PDU body.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::new(field, DecodeErrorKind::Truncated));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A C-Octet string of at most `max` octets, its NUL included; returns it without the NUL.
    pub(crate) fn cstring(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let window = &self.buf[..self.buf.len().min(max)];
        match window.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                Ok(s)
            }
            None if self.buf.len() < max => Err(DecodeError::new(field, DecodeErrorKind::Truncated)),
            None => Err(DecodeError::new(field, DecodeErrorKind::Unterminated { max })),
        }
    }
}

/// A field of a PDU body: how it is read and written.
pub(crate) trait Field: Sized {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError>;
    fn encode(&self, w: &mut Vec<u8>, field: &'static str) -> Result<(), EncodeError>;
}

impl Field for u8 {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        r.u8(field)
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.push(*self);
        Ok(())
    }
}

impl Field for u32 {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        r.u32(field)
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }
}

/// A C-Octet string of at most `MAX` octets including its NUL terminator (so `MAX - 1` characters). It holds
/// octets, not necessarily UTF-8: SMPP strings are ASCII by the letter but carriers send other things.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct COctetString<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> COctetString<MAX> {
    /// The string, if it fits in `MAX - 1` octets and has no NUL.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Self> {
        let bytes = bytes.into();
        (bytes.len() < MAX && !bytes.contains(&0)).then_some(COctetString(bytes))
    }

    /// The string without checks; [`Field::encode`] checks the limits before it writes.
    pub fn from_unchecked(bytes: impl Into<Vec<u8>>) -> Self {
        COctetString(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The string as UTF-8, with U+FFFD for what is not.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<const MAX: usize> From<&str> for COctetString<MAX> {
    /// Takes the string as it is; [`Field::encode`] rejects it later if it is too long.
    fn from(s: &str) -> Self {
        COctetString(s.as_bytes().to_vec())
    }
}

impl<const MAX: usize> std::fmt::Debug for COctetString<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_str_lossy())
    }
}

impl<const MAX: usize> std::fmt::Display for COctetString<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

impl<const MAX: usize> Field for COctetString<MAX> {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok(COctetString(r.cstring(MAX, field)?.to_vec()))
    }
    fn encode(&self, w: &mut Vec<u8>, field: &'static str) -> Result<(), EncodeError> {
        write_cstring(w, &self.0, MAX, field)
    }
}

pub(crate) fn write_cstring(w: &mut Vec<u8>, s: &[u8], max: usize, field: &'static str) -> Result<(), EncodeError> {
    if s.len() >= max {
        return Err(EncodeError::TooLong { field, len: s.len() + 1, max });
    }
    if s.contains(&0) {
        return Err(EncodeError::ContainsNul { field });
    }
    w.extend_from_slice(s);
    w.push(0);
    Ok(())
}

/// In JSON a string is a string when it is UTF-8, else `{"hex": "..."}`.
impl<const MAX: usize> Serialize for COctetString<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_text(&self.0, s)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for COctetString<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_text(d).map(COctetString)
    }
}

pub(crate) fn serialize_text<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("hex", &hex::encode(bytes))?;
            m.end()
        }
    }
}

pub(crate) fn deserialize_text<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Hex { hex: String },
    }
    match Repr::deserialize(d)? {
        Repr::Text(t) => Ok(t.into_bytes()),
        Repr::Hex { hex } => hex::decode(hex).map_err(serde::de::Error::custom),
    }
}

/// The time fields (`schedule_delivery_time`, `validity_period`, `final_date`): a C-Octet string that is empty
/// or exactly 16 characters. [`crate::time::SmppTime`] parses the characters.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TimeString(Vec<u8>);

impl TimeString {
    pub fn new(s: &str) -> Option<TimeString> {
        (s.is_empty() || s.len() == 16).then(|| TimeString(s.as_bytes().to_vec())).filter(|t| !t.0.contains(&0))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The time, or `None` when the field is empty ("immediate" or "default").
    pub fn parse(&self) -> Option<Result<crate::time::SmppTime, crate::time::TimeError>> {
        (!self.0.is_empty()).then(|| crate::time::SmppTime::parse(&String::from_utf8_lossy(&self.0)))
    }
}

impl From<&str> for TimeString {
    fn from(s: &str) -> Self {
        TimeString(s.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for TimeString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Field for TimeString {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        let s = r.cstring(17, field)?;
        if !s.is_empty() && s.len() != 16 {
            return Err(DecodeError::new(field, DecodeErrorKind::BadTimeLength { len: s.len() }));
        }
        Ok(TimeString(s.to_vec()))
    }
    fn encode(&self, w: &mut Vec<u8>, field: &'static str) -> Result<(), EncodeError> {
        if !self.0.is_empty() && self.0.len() != 16 {
            return Err(EncodeError::BadTimeLength { field, len: self.0.len() });
        }
        write_cstring(w, &self.0, 17, field)
    }
}

impl Serialize for TimeString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_text(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for TimeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_text(d).map(TimeString)
    }
}

/// Octets shown in JSON as a hex string.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Octets(pub Vec<u8>);

impl std::fmt::Debug for Octets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{}", hex::encode(&self.0))
    }
}

impl From<&[u8]> for Octets {
    fn from(b: &[u8]) -> Self {
        Octets(b.to_vec())
    }
}

impl Serialize for Octets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Octets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map(Octets).map_err(serde::de::Error::custom)
    }
}

/// `sm_length` followed by `short_message`: at most 254 octets (SMPP 3.4 5.2.21); longer messages go in the
/// `message_payload` TLV.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShortMessage(pub Octets);

/// The most `short_message` may hold.
pub const MAX_SHORT_MESSAGE: usize = 254;

impl ShortMessage {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        ShortMessage(Octets(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0.0
    }
}

impl Field for ShortMessage {
    fn decode(r: &mut Reader<'_>, _: &'static str) -> Result<Self, DecodeError> {
        let len = usize::from(r.u8("sm_length")?);
        if len > MAX_SHORT_MESSAGE {
            return Err(DecodeError::new("sm_length", DecodeErrorKind::TooLong { len, max: MAX_SHORT_MESSAGE }));
        }
        Ok(ShortMessage::new(r.take(len, "short_message")?))
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        let len = self.as_bytes().len();
        if len > MAX_SHORT_MESSAGE {
            return Err(EncodeError::TooLong { field: "short_message", len, max: MAX_SHORT_MESSAGE });
        }
        w.push(len as u8);
        w.extend_from_slice(self.as_bytes());
        Ok(())
    }
}
