//! Every SMPP 3.4 PDU (section 4): the bodies, [`Body`], and [`Pdu`] with its sans-IO `decode` and `encode`.

use serde::{Deserialize, Serialize};

use crate::field::{COctetString, DecodeError, DecodeErrorKind, EncodeError, Field, Reader, ShortMessage, TimeString};
use crate::status::CommandStatus;
use crate::tlv::Tlvs;

/// Octets in a PDU header: `command_length`, `command_id`, `command_status`, `sequence_number`.
pub const HEADER_LEN: usize = 16;

macro_rules! body {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $name {
            fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name { $($field: <$ty as Field>::decode(r, stringify!($field))?,)* })
            }

            fn encode_body(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
                $(Field::encode(&self.$field, w, stringify!($field))?;)*
                Ok(())
            }
        }
    };
}

body! {
    /// bind_transmitter, bind_receiver and bind_transceiver (4.1.1, 4.1.3, 4.1.5).
    Bind {
        system_id: COctetString<16>,
        password: COctetString<9>,
        system_type: COctetString<13>,
        /// 0x34 for SMPP 3.4.
        interface_version: u8,
        addr_ton: u8,
        addr_npi: u8,
        address_range: COctetString<41>,
    }
}

body! {
    /// The responses to the three binds (4.1.2, 4.1.4, 4.1.6).
    BindResp {
        system_id: COctetString<16>,
        /// `sc_interface_version` goes here.
        tlvs: Tlvs,
    }
}

body! {
    /// outbind (4.1.7).
    Outbind {
        system_id: COctetString<16>,
        password: COctetString<9>,
    }
}

body! {
    /// submit_sm (4.4.1) and deliver_sm (4.6.1), which share one layout.
    SubmitSm {
        service_type: COctetString<6>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<21>,
        dest_addr_ton: u8,
        dest_addr_npi: u8,
        destination_addr: COctetString<21>,
        esm_class: u8,
        protocol_id: u8,
        priority_flag: u8,
        schedule_delivery_time: TimeString,
        validity_period: TimeString,
        registered_delivery: u8,
        replace_if_present_flag: u8,
        data_coding: u8,
        sm_default_msg_id: u8,
        /// `sm_length` and `short_message`.
        short_message: ShortMessage,
        tlvs: Tlvs,
    }
}

body! {
    /// submit_sm_resp (4.4.2), deliver_sm_resp (4.6.2) and data_sm_resp (4.7.2).
    SubmitSmResp {
        message_id: COctetString<65>,
        tlvs: Tlvs,
    }
}

body! {
    /// submit_multi (4.5.1).
    SubmitMulti {
        service_type: COctetString<6>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<21>,
        /// `number_of_dests` and the `dest_address` list.
        dest_address: DestAddresses,
        esm_class: u8,
        protocol_id: u8,
        priority_flag: u8,
        schedule_delivery_time: TimeString,
        validity_period: TimeString,
        registered_delivery: u8,
        replace_if_present_flag: u8,
        data_coding: u8,
        sm_default_msg_id: u8,
        short_message: ShortMessage,
        tlvs: Tlvs,
    }
}

body! {
    /// submit_multi_resp (4.5.2).
    SubmitMultiResp {
        message_id: COctetString<65>,
        /// `no_unsuccess` and the `unsuccess_sme` list.
        unsuccess_sme: UnsuccessSmes,
        tlvs: Tlvs,
    }
}

body! {
    /// data_sm (4.7.1).
    DataSm {
        service_type: COctetString<6>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<65>,
        dest_addr_ton: u8,
        dest_addr_npi: u8,
        destination_addr: COctetString<65>,
        esm_class: u8,
        registered_delivery: u8,
        data_coding: u8,
        tlvs: Tlvs,
    }
}

body! {
    /// query_sm (4.8.1).
    QuerySm {
        message_id: COctetString<65>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<21>,
    }
}

body! {
    /// query_sm_resp (4.8.2).
    QuerySmResp {
        message_id: COctetString<65>,
        final_date: TimeString,
        message_state: u8,
        error_code: u8,
    }
}

body! {
    /// cancel_sm (4.9.1).
    CancelSm {
        service_type: COctetString<6>,
        message_id: COctetString<65>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<21>,
        dest_addr_ton: u8,
        dest_addr_npi: u8,
        destination_addr: COctetString<21>,
    }
}

body! {
    /// replace_sm (4.10.1).
    ReplaceSm {
        message_id: COctetString<65>,
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<21>,
        schedule_delivery_time: TimeString,
        validity_period: TimeString,
        registered_delivery: u8,
        sm_default_msg_id: u8,
        short_message: ShortMessage,
    }
}

body! {
    /// alert_notification (4.12.1).
    AlertNotification {
        source_addr_ton: u8,
        source_addr_npi: u8,
        source_addr: COctetString<65>,
        esme_addr_ton: u8,
        esme_addr_npi: u8,
        esme_addr: COctetString<65>,
        /// `ms_availability_status` goes here.
        tlvs: Tlvs,
    }
}

/// One destination of a submit_multi: an SME address (`dest_flag` 1) or a distribution list name (2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestAddress {
    SmeAddress { dest_addr_ton: u8, dest_addr_npi: u8, destination_addr: COctetString<21> },
    DistributionList { dl_name: COctetString<21> },
}

/// The most destinations one submit_multi may name.
pub const MAX_DESTS: usize = 254;

/// `number_of_dests` and the `dest_address` entries of a submit_multi.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DestAddresses(pub Vec<DestAddress>);

impl Field for DestAddresses {
    fn decode(r: &mut Reader<'_>, _: &'static str) -> Result<Self, DecodeError> {
        let n = r.u8("number_of_dests")?;
        if usize::from(n) > MAX_DESTS {
            return Err(DecodeError::new("number_of_dests", DecodeErrorKind::InvalidValue { value: n.into() }));
        }
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            out.push(match r.u8("dest_flag")? {
                1 => DestAddress::SmeAddress {
                    dest_addr_ton: r.u8("dest_addr_ton")?,
                    dest_addr_npi: r.u8("dest_addr_npi")?,
                    destination_addr: Field::decode(r, "destination_addr")?,
                },
                2 => DestAddress::DistributionList { dl_name: Field::decode(r, "dl_name")? },
                other => {
                    return Err(DecodeError::new("dest_flag", DecodeErrorKind::InvalidValue { value: other.into() }));
                }
            });
        }
        Ok(DestAddresses(out))
    }

    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        if self.0.len() > MAX_DESTS {
            return Err(EncodeError::TooLong { field: "number_of_dests", len: self.0.len(), max: MAX_DESTS });
        }
        w.push(self.0.len() as u8);
        for d in &self.0 {
            match d {
                DestAddress::SmeAddress { dest_addr_ton, dest_addr_npi, destination_addr } => {
                    w.extend_from_slice(&[1, *dest_addr_ton, *dest_addr_npi]);
                    destination_addr.encode(w, "destination_addr")?;
                }
                DestAddress::DistributionList { dl_name } => {
                    w.push(2);
                    dl_name.encode(w, "dl_name")?;
                }
            }
        }
        Ok(())
    }
}

/// One destination a submit_multi could not reach.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsuccessSme {
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub destination_addr: COctetString<21>,
    pub error_status_code: CommandStatus,
}

/// `no_unsuccess` and the `unsuccess_sme` entries of a submit_multi_resp.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnsuccessSmes(pub Vec<UnsuccessSme>);

impl Field for UnsuccessSmes {
    fn decode(r: &mut Reader<'_>, _: &'static str) -> Result<Self, DecodeError> {
        let n = r.u8("no_unsuccess")?;
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            out.push(UnsuccessSme {
                dest_addr_ton: r.u8("dest_addr_ton")?,
                dest_addr_npi: r.u8("dest_addr_npi")?,
                destination_addr: Field::decode(r, "destination_addr")?,
                error_status_code: CommandStatus::from_u32(r.u32("error_status_code")?),
            });
        }
        Ok(UnsuccessSmes(out))
    }

    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        if self.0.len() > 255 {
            return Err(EncodeError::TooLong { field: "no_unsuccess", len: self.0.len(), max: 255 });
        }
        w.push(self.0.len() as u8);
        for u in &self.0 {
            w.extend_from_slice(&[u.dest_addr_ton, u.dest_addr_npi]);
            u.destination_addr.encode(w, "destination_addr")?;
            w.extend_from_slice(&u.error_status_code.as_u32().to_be_bytes());
        }
        Ok(())
    }
}

macro_rules! bodies {
    ($($(#[$doc:meta])* $variant:ident $(($ty:ty))? = $id:literal, $name:literal;)*) => {
        /// A PDU body, by command. In JSON the command's name is the `"command"` field.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "command", rename_all = "snake_case")]
        pub enum Body {
            $($(#[$doc])* $variant $(($ty))?,)*
        }

        /// `command_id` values (SMPP 3.4 5.1.2.1).
        pub mod command_id {
            $(#[allow(non_upper_case_globals, missing_docs)] pub const $variant: u32 = $id;)*
        }

        impl Body {
            /// The `command_id`.
            pub fn command_id(&self) -> u32 {
                match self {
                    $(body_pat!($variant $(($ty))?) => $id,)*
                }
            }

            /// The command's name, such as `"submit_sm"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(body_pat!($variant $(($ty))?) => $name,)*
                }
            }

            /// The name of a `command_id`, if SMPP 3.4 defines it.
            pub fn command_name(id: u32) -> Option<&'static str> {
                match id {
                    $($id => Some($name),)*
                    _ => None,
                }
            }

            /// The body of command `id` from `r`; `None` for an unknown command.
            fn decode(id: u32, r: &mut Reader<'_>) -> Option<Result<Body, DecodeError>> {
                Some(match id {
                    $($id => body_decode!(r, $variant $(($ty))?),)*
                    _ => return None,
                })
            }

            /// The default body of command `id`, used for error responses sent without a body.
            fn empty(id: u32) -> Option<Body> {
                Some(match id {
                    $($id => body_default!($variant $(($ty))?),)*
                    _ => return None,
                })
            }

            fn encode(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
                match self {
                    $(body_bind!(b, $variant $(($ty))?) => body_encode!(b, w $(, $ty)?),)*
                }
            }
        }
    };
}

macro_rules! body_pat {
    ($variant:ident ($ty:ty)) => {
        Body::$variant(_)
    };
    ($variant:ident) => {
        Body::$variant
    };
}
macro_rules! body_bind {
    ($b:ident, $variant:ident ($ty:ty)) => {
        Body::$variant($b)
    };
    ($b:ident, $variant:ident) => {
        Body::$variant
    };
}
macro_rules! body_decode {
    ($r:ident, $variant:ident ($ty:ty)) => {
        <$ty>::decode_body($r).map(Body::$variant)
    };
    ($r:ident, $variant:ident) => {
        Ok(Body::$variant)
    };
}
macro_rules! body_default {
    ($variant:ident ($ty:ty)) => {
        Body::$variant(<$ty>::default())
    };
    ($variant:ident) => {
        Body::$variant
    };
}
macro_rules! body_encode {
    ($b:ident, $w:ident, $ty:ty) => {
        $b.encode_body($w)
    };
    ($b:ident, $w:ident) => {
        Ok(())
    };
}

bodies! {
    GenericNack = 0x8000_0000, "generic_nack";
    BindReceiver(Bind) = 0x0000_0001, "bind_receiver";
    BindReceiverResp(BindResp) = 0x8000_0001, "bind_receiver_resp";
    BindTransmitter(Bind) = 0x0000_0002, "bind_transmitter";
    BindTransmitterResp(BindResp) = 0x8000_0002, "bind_transmitter_resp";
    QuerySm(QuerySm) = 0x0000_0003, "query_sm";
    QuerySmResp(QuerySmResp) = 0x8000_0003, "query_sm_resp";
    SubmitSm(SubmitSm) = 0x0000_0004, "submit_sm";
    SubmitSmResp(SubmitSmResp) = 0x8000_0004, "submit_sm_resp";
    DeliverSm(SubmitSm) = 0x0000_0005, "deliver_sm";
    DeliverSmResp(SubmitSmResp) = 0x8000_0005, "deliver_sm_resp";
    Unbind = 0x0000_0006, "unbind";
    UnbindResp = 0x8000_0006, "unbind_resp";
    ReplaceSm(ReplaceSm) = 0x0000_0007, "replace_sm";
    ReplaceSmResp = 0x8000_0007, "replace_sm_resp";
    CancelSm(CancelSm) = 0x0000_0008, "cancel_sm";
    CancelSmResp = 0x8000_0008, "cancel_sm_resp";
    BindTransceiver(Bind) = 0x0000_0009, "bind_transceiver";
    BindTransceiverResp(BindResp) = 0x8000_0009, "bind_transceiver_resp";
    Outbind(Outbind) = 0x0000_000B, "outbind";
    EnquireLink = 0x0000_0015, "enquire_link";
    EnquireLinkResp = 0x8000_0015, "enquire_link_resp";
    SubmitMulti(SubmitMulti) = 0x0000_0021, "submit_multi";
    SubmitMultiResp(SubmitMultiResp) = 0x8000_0021, "submit_multi_resp";
    AlertNotification(AlertNotification) = 0x0000_0102, "alert_notification";
    DataSm(DataSm) = 0x0000_0103, "data_sm";
    DataSmResp(SubmitSmResp) = 0x8000_0103, "data_sm_resp";
}

/// Whether `command_id` is a response (its high bit set).
pub fn is_response(command_id: u32) -> bool {
    command_id & 0x8000_0000 != 0
}

/// The fixed part of every PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Header {
    pub command_length: u32,
    pub command_id: u32,
    pub command_status: u32,
    pub sequence_number: u32,
}

impl Header {
    /// Reads a header from the first 16 octets, or `None` if there are fewer.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..HEADER_LEN)?;
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(Header {
            command_length: word(0),
            command_id: word(4),
            command_status: word(8),
            sequence_number: word(12),
        })
    }
}

/// One PDU: a header's status and sequence number, and a body that names the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pdu {
    #[serde(default)]
    pub command_status: CommandStatus,
    #[serde(default = "one")]
    pub sequence_number: u32,
    #[serde(flatten)]
    pub body: Body,
}

fn one() -> u32 {
    1
}

/// A well-framed PDU whose body could not be decoded. It carries what a session needs to answer: the header (for
/// the sequence number) and the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The `command_id` is not an SMPP 3.4 command.
    #[error("unknown command_id {:#010x}", .header.command_id)]
    UnknownCommand { header: Header },
    /// The body of a known command is malformed.
    #[error("{command}: {error}")]
    Body { header: Header, command: &'static str, error: DecodeError },
    /// The frame is not a PDU at all: `command_length` disagrees with the octets given.
    #[error("command_length {} does not match the {len} octets of the frame", .header.command_length)]
    Length { header: Header, len: usize },
}

impl PduError {
    pub fn header(&self) -> Header {
        match self {
            PduError::UnknownCommand { header } | PduError::Body { header, .. } | PduError::Length { header, .. } => {
                *header
            }
        }
    }

    /// The status to answer with.
    pub fn status(&self) -> CommandStatus {
        match self {
            PduError::UnknownCommand { .. } => CommandStatus::ESME_RINVCMDID,
            PduError::Body { error, .. } => error.status(),
            PduError::Length { .. } => CommandStatus::ESME_RINVCMDLEN,
        }
    }

    /// The PDU to answer with: for a malformed request, its own response with the error status (as SMPP 3.4 asks
    /// for a submit_sm that fails validation); otherwise a generic_nack. `None` for a malformed response, which
    /// is never answered.
    pub fn response(&self) -> Option<Pdu> {
        let header = self.header();
        let seq = header.sequence_number;
        if is_response(header.command_id) {
            return None;
        }
        let body = match self {
            PduError::Body { .. } => Body::empty(header.command_id | 0x8000_0000).unwrap_or(Body::GenericNack),
            _ => Body::GenericNack,
        };
        Some(Pdu { command_status: self.status(), sequence_number: seq, body })
    }
}

impl Pdu {
    /// The answer that refuses `request` (sequence number `sequence`) with `status`: its own response with an empty
    /// body, or `generic_nack` for a command that has no response (or is a response itself).
    pub fn refusal(request: &Body, sequence: u32, status: CommandStatus) -> Pdu {
        let id = request.command_id();
        let body = if is_response(id) { None } else { Body::empty(id | 0x8000_0000) };
        Pdu { command_status: status, sequence_number: sequence, body: body.unwrap_or(Body::GenericNack) }
    }

    /// A PDU with status `ESME_ROK`.
    pub fn new(sequence_number: u32, body: Body) -> Pdu {
        Pdu { command_status: CommandStatus::ESME_ROK, sequence_number, body }
    }

    /// The `command_id`.
    pub fn command_id(&self) -> u32 {
        self.body.command_id()
    }

    /// Decodes one whole PDU: `frame` holds exactly `command_length` octets (see [`crate::frame`] for cutting a
    /// stream into frames). Never panics, whatever the octets.
    pub fn decode(frame: &[u8]) -> Result<Pdu, PduError> {
        let Some(header) = Header::peek(frame) else {
            return Err(PduError::Length { header: Header::default(), len: frame.len() });
        };
        if header.command_length as usize != frame.len() {
            return Err(PduError::Length { header, len: frame.len() });
        }
        let command_status = CommandStatus::from_u32(header.command_status);
        let body_octets = &frame[HEADER_LEN..];
        let mut r = Reader::new(body_octets);
        let body = if body_octets.is_empty() && !command_status.is_ok() && is_response(header.command_id) {
            // SMPP 3.4: a response with an error status may omit its body.
            Body::empty(header.command_id)
        } else {
            Body::decode(header.command_id, &mut r).transpose().map_err(|error| PduError::Body {
                header,
                command: Body::command_name(header.command_id).unwrap_or("unknown"),
                error,
            })?
        };
        let Some(body) = body else {
            return Err(PduError::UnknownCommand { header });
        };
        if !r.is_empty() {
            let error = DecodeError::new("body", DecodeErrorKind::Trailing { count: r.remaining() });
            return Err(PduError::Body { header, command: body.name(), error });
        }
        Ok(Pdu { command_status, sequence_number: header.sequence_number, body })
    }

    /// Encodes the PDU, checking every field against the specification's limits.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Vec::with_capacity(64);
        self.encode_into(&mut w)?;
        Ok(w)
    }

    /// Appends the encoded PDU to `w`; on error `w` is left as it was.
    pub fn encode_into(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = w.len();
        w.extend_from_slice(&[0; 4]);
        w.extend_from_slice(&self.body.command_id().to_be_bytes());
        w.extend_from_slice(&self.command_status.as_u32().to_be_bytes());
        w.extend_from_slice(&self.sequence_number.to_be_bytes());
        let omit = !self.command_status.is_ok()
            && is_response(self.body.command_id())
            && Body::empty(self.body.command_id()).as_ref() == Some(&self.body);
        if !omit && let Err(e) = self.body.encode(w) {
            w.truncate(start);
            return Err(e);
        }
        let len = w.len() - start;
        let Ok(len32) = u32::try_from(len) else {
            w.truncate(start);
            return Err(EncodeError::PduTooLong { len });
        };
        w[start..start + 4].copy_from_slice(&len32.to_be_bytes());
        Ok(())
    }
}
