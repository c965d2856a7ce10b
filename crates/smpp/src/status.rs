//! `command_status` (SMPP 3.4 5.1.3): the outcome carried in every response header.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:literal),* $(,)?) => {
        /// An SMPP 3.4 `command_status`. Values the specification does not name (vendor codes 0x400..=0x4FF and the
        /// reserved ranges) are kept as `Other`.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum CommandStatus {
            $($(#[$doc])* $name,)*
            /// A value without a name in SMPP 3.4.
            Other(u32),
        }

        impl CommandStatus {
            /// The status for a wire value.
            pub fn from_u32(v: u32) -> CommandStatus {
                match v {
                    $($value => CommandStatus::$name,)*
                    other => CommandStatus::Other(other),
                }
            }

            /// The wire value.
            pub fn as_u32(self) -> u32 {
                match self {
                    $(CommandStatus::$name => $value,)*
                    CommandStatus::Other(v) => v,
                }
            }

            /// The specification's name, such as `"ESME_RTHROTTLED"`, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(CommandStatus::$name => Some(stringify!($name)),)*
                    CommandStatus::Other(_) => None,
                }
            }

            /// The status with this specification name.
            pub fn from_name(name: &str) -> Option<CommandStatus> {
                match name {
                    $(stringify!($name) => Some(CommandStatus::$name),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// No error.
    #[default]
    ESME_ROK = 0x0000_0000,
    /// Message length is invalid.
    ESME_RINVMSGLEN = 0x0000_0001,
    /// Command length is invalid.
    ESME_RINVCMDLEN = 0x0000_0002,
    /// Invalid command ID.
    ESME_RINVCMDID = 0x0000_0003,
    /// Incorrect bind status for the given command.
    ESME_RINVBNDSTS = 0x0000_0004,
    /// ESME already in bound state.
    ESME_RALYBND = 0x0000_0005,
    /// Invalid priority flag.
    ESME_RINVPRTFLG = 0x0000_0006,
    /// Invalid registered delivery flag.
    ESME_RINVREGDLVFLG = 0x0000_0007,
    /// System error.
    ESME_RSYSERR = 0x0000_0008,
    /// Invalid source address.
    ESME_RINVSRCADR = 0x0000_000A,
    /// Invalid destination address.
    ESME_RINVDSTADR = 0x0000_000B,
    /// Message ID is invalid.
    ESME_RINVMSGID = 0x0000_000C,
    /// Bind failed.
    ESME_RBINDFAIL = 0x0000_000D,
    /// Invalid password.
    ESME_RINVPASWD = 0x0000_000E,
    /// Invalid system ID.
    ESME_RINVSYSID = 0x0000_000F,
    /// cancel_sm failed.
    ESME_RCANCELFAIL = 0x0000_0011,
    /// replace_sm failed.
    ESME_RREPLACEFAIL = 0x0000_0013,
    /// Message queue full.
    ESME_RMSGQFUL = 0x0000_0014,
    /// Invalid service type.
    ESME_RINVSERTYP = 0x0000_0015,
    /// Invalid number of destinations.
    ESME_RINVNUMDESTS = 0x0000_0033,
    /// Invalid distribution list name.
    ESME_RINVDLNAME = 0x0000_0034,
    /// Destination flag is invalid (submit_multi).
    ESME_RINVDESTFLAG = 0x0000_0040,
    /// Invalid "submit with replace" request.
    ESME_RINVSUBREP = 0x0000_0042,
    /// Invalid esm_class field data.
    ESME_RINVESMCLASS = 0x0000_0043,
    /// Cannot submit to distribution list.
    ESME_RCNTSUBDL = 0x0000_0044,
    /// submit_sm or submit_multi failed.
    ESME_RSUBMITFAIL = 0x0000_0045,
    /// Invalid source address TON.
    ESME_RINVSRCTON = 0x0000_0048,
    /// Invalid source address NPI.
    ESME_RINVSRCNPI = 0x0000_0049,
    /// Invalid destination address TON.
    ESME_RINVDSTTON = 0x0000_0050,
    /// Invalid destination address NPI.
    ESME_RINVDSTNPI = 0x0000_0051,
    /// Invalid system_type field.
    ESME_RINVSYSTYP = 0x0000_0053,
    /// Invalid replace_if_present flag.
    ESME_RINVREPFLAG = 0x0000_0054,
    /// Invalid number of messages.
    ESME_RINVNUMMSGS = 0x0000_0055,
    /// Throttling error: the ESME has exceeded its allowed message limits.
    ESME_RTHROTTLED = 0x0000_0058,
    /// Invalid scheduled delivery time.
    ESME_RINVSCHED = 0x0000_0061,
    /// Invalid message validity period (expiry time).
    ESME_RINVEXPIRY = 0x0000_0062,
    /// Predefined message invalid or not found.
    ESME_RINVDFTMSGID = 0x0000_0063,
    /// ESME receiver temporary application error.
    ESME_RX_T_APPN = 0x0000_0064,
    /// ESME receiver permanent application error.
    ESME_RX_P_APPN = 0x0000_0065,
    /// ESME receiver reject message error.
    ESME_RX_R_APPN = 0x0000_0066,
    /// query_sm request failed.
    ESME_RQUERYFAIL = 0x0000_0067,
    /// Error in the optional part of the PDU body.
    ESME_RINVOPTPARSTREAM = 0x0000_00C0,
    /// Optional parameter not allowed.
    ESME_ROPTPARNOTALLWD = 0x0000_00C1,
    /// Invalid parameter length.
    ESME_RINVPARLEN = 0x0000_00C2,
    /// Expected optional parameter missing.
    ESME_RMISSINGOPTPARAM = 0x0000_00C3,
    /// Invalid optional parameter value.
    ESME_RINVOPTPARAMVAL = 0x0000_00C4,
    /// Delivery failure (used for data_sm_resp).
    ESME_RDELIVERYFAILURE = 0x0000_00FE,
    /// Unknown error.
    ESME_RUNKNOWNERR = 0x0000_00FF,
}

impl CommandStatus {
    /// Whether this is `ESME_ROK`.
    pub fn is_ok(self) -> bool {
        self == CommandStatus::ESME_ROK
    }
}

impl From<u32> for CommandStatus {
    fn from(v: u32) -> Self {
        CommandStatus::from_u32(v)
    }
}

impl std::fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.as_u32()),
            None => write!(f, "{:#010x}", self.as_u32()),
        }
    }
}

/// In JSON a status is its name (`"ESME_ROK"`), or a number where it has none.
impl Serialize for CommandStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u32(self.as_u32()),
        }
    }
}

impl<'de> Deserialize<'de> for CommandStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u32),
            Name(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(CommandStatus::from_u32(n)),
            Repr::Name(name) => CommandStatus::from_name(&name)
                .or_else(|| {
                    let hex = name.strip_prefix("0x").or_else(|| name.strip_prefix("0X"))?;
                    u32::from_str_radix(hex, 16).ok().map(CommandStatus::from_u32)
                })
                .ok_or_else(|| serde::de::Error::custom(format!("unknown command_status {name:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_round_trip() {
        for v in 0..0x200u32 {
            let s = CommandStatus::from_u32(v);
            assert_eq!(s.as_u32(), v);
            if let Some(name) = s.name() {
                assert_eq!(CommandStatus::from_name(name), Some(s));
            }
        }
        assert_eq!(CommandStatus::from_u32(0x58), CommandStatus::ESME_RTHROTTLED);
        assert_eq!(CommandStatus::from_u32(0x401), CommandStatus::Other(0x401));
    }
}
