//! Optional parameters (SMPP 3.4 5.3): every TLV of the specification typed, anything else kept as
//! [`Tlv::Unknown`] and written back octet for octet, in the order received.

use serde::{Deserialize, Serialize};

use crate::field::{DecodeError, DecodeErrorKind, EncodeError, Field, Octets, Reader, write_cstring};

/// How a TLV's value is read and written.
trait Value: Sized {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind>;
    fn encode(&self, w: &mut Vec<u8>, name: &'static str) -> Result<(), EncodeError>;
}

fn exact<const N: usize>(tag: u16, v: &[u8], expected: &'static str) -> Result<[u8; N], DecodeErrorKind> {
    v.try_into().map_err(|_| DecodeErrorKind::TlvLength { tag, len: v.len(), expected })
}

impl Value for u8 {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        Ok(exact::<1>(tag, v, "expected 1")?[0])
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.push(*self);
        Ok(())
    }
}

impl Value for u16 {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        Ok(u16::from_be_bytes(exact(tag, v, "expected 2")?))
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }
}

impl Value for u32 {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        Ok(u32::from_be_bytes(exact(tag, v, "expected 4")?))
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }
}

/// A TLV with no value: its presence is the information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Flag;

impl Value for Flag {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        exact::<0>(tag, v, "expected 0")?;
        Ok(Flag)
    }
    fn encode(&self, _: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// A C-Octet string TLV of at most `MAX` octets with its NUL. A value that lacks the NUL is accepted (carriers
/// send `receipted_message_id` that way) and written back with it.
pub type TlvString<const MAX: usize> = crate::field::COctetString<MAX>;

impl<const MAX: usize> Value for TlvString<MAX> {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        let s = v.strip_suffix(&[0]).unwrap_or(v);
        if s.len() >= MAX || s.contains(&0) {
            return Err(DecodeErrorKind::TlvLength { tag, len: v.len(), expected: "a NUL-terminated string" });
        }
        Ok(TlvString::from_unchecked(s))
    }
    fn encode(&self, w: &mut Vec<u8>, name: &'static str) -> Result<(), EncodeError> {
        write_cstring(w, self.as_bytes(), MAX, name)
    }
}

/// An octet string TLV of `MIN..=MAX` octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bounded<const MIN: usize, const MAX: usize>(pub Octets);

impl<const MIN: usize, const MAX: usize> Value for Bounded<MIN, MAX> {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        if !(MIN..=MAX).contains(&v.len()) {
            return Err(DecodeErrorKind::TlvLength { tag, len: v.len(), expected: "outside the allowed range" });
        }
        Ok(Bounded(Octets(v.to_vec())))
    }
    fn encode(&self, w: &mut Vec<u8>, name: &'static str) -> Result<(), EncodeError> {
        if self.0.0.len() > MAX || self.0.0.len() < MIN {
            return Err(EncodeError::TooLong { field: name, len: self.0.0.len(), max: MAX });
        }
        w.extend_from_slice(&self.0.0);
        Ok(())
    }
}

/// `network_error_code` (5.3.2.31): the network type and its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkErrorCode {
    /// 1 ANSI-136, 2 IS-95, 3 GSM, 4 ANSI-41.
    pub network_type: u8,
    pub error_code: u16,
}

impl Value for NetworkErrorCode {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        let [t, hi, lo] = exact(tag, v, "expected 3")?;
        Ok(NetworkErrorCode { network_type: t, error_code: u16::from_be_bytes([hi, lo]) })
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.push(self.network_type);
        w.extend_from_slice(&self.error_code.to_be_bytes());
        Ok(())
    }
}

/// `its_session_info` (5.3.2.43): a session number and a sequence number whose last bit ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ItsSessionInfo {
    pub session_number: u8,
    pub sequence: u8,
}

impl Value for ItsSessionInfo {
    fn decode(tag: u16, v: &[u8]) -> Result<Self, DecodeErrorKind> {
        let [session_number, sequence] = exact(tag, v, "expected 2")?;
        Ok(ItsSessionInfo { session_number, sequence })
    }
    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        w.extend_from_slice(&[self.session_number, self.sequence]);
        Ok(())
    }
}

/// A TLV whose tag SMPP 3.4 does not define (vendor TLVs 0x1400..=0x3FFF, or SMPP 5.0 ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct UnknownTlv {
    pub tag: u16,
    pub value: Octets,
}

macro_rules! tlvs {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $tag:literal, $name:literal;)*) => {
        /// One optional parameter. In JSON: `{"<name>": value}`.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Tlv {
            $($(#[$doc])* $variant($ty),)*
            /// A tag SMPP 3.4 does not define, kept as received.
            Unknown(UnknownTlv),
        }

        /// Tag values of the SMPP 3.4 TLVs.
        pub mod tag {
            $(#[allow(non_upper_case_globals, missing_docs)] pub const $variant: u16 = $tag;)*
        }

        impl Tlv {
            /// The tag.
            pub fn tag(&self) -> u16 {
                match self {
                    $(Tlv::$variant(_) => $tag,)*
                    Tlv::Unknown(u) => u.tag,
                }
            }

            /// The specification's name, or `"unknown"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Tlv::$variant(_) => $name,)*
                    Tlv::Unknown(_) => "unknown",
                }
            }

            /// The specification's name of a tag, if SMPP 3.4 defines it.
            pub fn tag_name(tag: u16) -> Option<&'static str> {
                match tag {
                    $($tag => Some($name),)*
                    _ => None,
                }
            }

            fn decode_value(tag: u16, v: &[u8]) -> Result<Tlv, DecodeError> {
                match tag {
                    $($tag => <$ty as Value>::decode(tag, v)
                        .map(Tlv::$variant)
                        .map_err(|kind| DecodeError::new($name, kind)),)*
                    _ => Ok(Tlv::Unknown(UnknownTlv { tag, value: Octets(v.to_vec()) })),
                }
            }

            fn encode_value(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
                match self {
                    $(Tlv::$variant(v) => Value::encode(v, w, $name),)*
                    Tlv::Unknown(u) => {
                        w.extend_from_slice(&u.value.0);
                        Ok(())
                    }
                }
            }
        }
    };
}

tlvs! {
    DestAddrSubunit(u8) = 0x0005, "dest_addr_subunit";
    DestNetworkType(u8) = 0x0006, "dest_network_type";
    DestBearerType(u8) = 0x0007, "dest_bearer_type";
    DestTelematicsId(u16) = 0x0008, "dest_telematics_id";
    SourceAddrSubunit(u8) = 0x000D, "source_addr_subunit";
    SourceNetworkType(u8) = 0x000E, "source_network_type";
    SourceBearerType(u8) = 0x000F, "source_bearer_type";
    SourceTelematicsId(u8) = 0x0010, "source_telematics_id";
    QosTimeToLive(u32) = 0x0017, "qos_time_to_live";
    PayloadType(u8) = 0x0019, "payload_type";
    AdditionalStatusInfoText(TlvString<256>) = 0x001D, "additional_status_info_text";
    ReceiptedMessageId(TlvString<65>) = 0x001E, "receipted_message_id";
    MsMsgWaitFacilities(u8) = 0x0030, "ms_msg_wait_facilities";
    PrivacyIndicator(u8) = 0x0201, "privacy_indicator";
    SourceSubaddress(Bounded<2, 23>) = 0x0202, "source_subaddress";
    DestSubaddress(Bounded<2, 23>) = 0x0203, "dest_subaddress";
    UserMessageReference(u16) = 0x0204, "user_message_reference";
    UserResponseCode(u8) = 0x0205, "user_response_code";
    SourcePort(u16) = 0x020A, "source_port";
    DestinationPort(u16) = 0x020B, "destination_port";
    SarMsgRefNum(u16) = 0x020C, "sar_msg_ref_num";
    LanguageIndicator(u8) = 0x020D, "language_indicator";
    SarTotalSegments(u8) = 0x020E, "sar_total_segments";
    SarSegmentSeqnum(u8) = 0x020F, "sar_segment_seqnum";
    ScInterfaceVersion(u8) = 0x0210, "sc_interface_version";
    CallbackNumPresInd(u8) = 0x0302, "callback_num_pres_ind";
    CallbackNumAtag(Bounded<0, 65>) = 0x0303, "callback_num_atag";
    NumberOfMessages(u8) = 0x0304, "number_of_messages";
    CallbackNum(Bounded<4, 19>) = 0x0381, "callback_num";
    DpfResult(u8) = 0x0420, "dpf_result";
    SetDpf(u8) = 0x0421, "set_dpf";
    MsAvailabilityStatus(u8) = 0x0422, "ms_availability_status";
    NetworkErrorCode(NetworkErrorCode) = 0x0423, "network_error_code";
    MessagePayload(Bounded<0, 65535>) = 0x0424, "message_payload";
    DeliveryFailureReason(u8) = 0x0425, "delivery_failure_reason";
    MoreMessagesToSend(u8) = 0x0426, "more_messages_to_send";
    MessageState(u8) = 0x0427, "message_state";
    UssdServiceOp(u8) = 0x0501, "ussd_service_op";
    DisplayTime(u8) = 0x1201, "display_time";
    SmsSignal(u16) = 0x1203, "sms_signal";
    MsValidity(u8) = 0x1204, "ms_validity";
    AlertOnMessageDelivery(Flag) = 0x130C, "alert_on_message_delivery";
    ItsReplyType(u8) = 0x1380, "its_reply_type";
    ItsSessionInfo(ItsSessionInfo) = 0x1383, "its_session_info";
}

/// The TLVs at the end of a PDU body, in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tlvs(pub Vec<Tlv>);

impl Tlvs {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Tlv> {
        self.0.iter()
    }

    pub fn push(&mut self, tlv: Tlv) {
        self.0.push(tlv);
    }

    /// The first TLV with this tag.
    pub fn get(&self, tag: u16) -> Option<&Tlv> {
        self.0.iter().find(|t| t.tag() == tag)
    }

    /// `message_payload`, if present.
    pub fn message_payload(&self) -> Option<&[u8]> {
        self.0.iter().find_map(|t| match t {
            Tlv::MessagePayload(p) => Some(p.0.0.as_slice()),
            _ => None,
        })
    }

    /// `receipted_message_id`, if present.
    pub fn receipted_message_id(&self) -> Option<&[u8]> {
        self.0.iter().find_map(|t| match t {
            Tlv::ReceiptedMessageId(s) => Some(s.as_bytes()),
            _ => None,
        })
    }

    /// `message_state`, if present.
    pub fn message_state(&self) -> Option<u8> {
        self.0.iter().find_map(|t| match t {
            Tlv::MessageState(s) => Some(*s),
            _ => None,
        })
    }

    /// The SAR TLVs as (reference, total, sequence), when all three are present.
    pub fn sar(&self) -> Option<(u16, u8, u8)> {
        let mut r = None;
        let mut t = None;
        let mut s = None;
        for tlv in &self.0 {
            match tlv {
                Tlv::SarMsgRefNum(v) => r = Some(*v),
                Tlv::SarTotalSegments(v) => t = Some(*v),
                Tlv::SarSegmentSeqnum(v) => s = Some(*v),
                _ => {}
            }
        }
        Some((r?, t?, s?))
    }
}

impl Field for Tlvs {
    fn decode(r: &mut Reader<'_>, _: &'static str) -> Result<Self, DecodeError> {
        let mut out = Vec::new();
        while !r.is_empty() {
            if r.remaining() < 4 {
                return Err(DecodeError::new("tlvs", DecodeErrorKind::Truncated));
            }
            let tag = r.u16("tlvs")?;
            let len = usize::from(r.u16("tlvs")?);
            let value = r.take(len, "tlvs")?;
            out.push(Tlv::decode_value(tag, value)?);
        }
        Ok(Tlvs(out))
    }

    fn encode(&self, w: &mut Vec<u8>, _: &'static str) -> Result<(), EncodeError> {
        for tlv in &self.0 {
            w.extend_from_slice(&tlv.tag().to_be_bytes());
            let at = w.len();
            w.extend_from_slice(&[0, 0]);
            tlv.encode_value(w)?;
            let len = w.len() - at - 2;
            let len = u16::try_from(len).map_err(|_| EncodeError::TooLong { field: tlv.name(), len, max: 65535 })?;
            w[at..at + 2].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }
}
