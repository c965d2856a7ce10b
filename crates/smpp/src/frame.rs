//! Cutting a byte stream into PDU frames. A frame is `command_length` octets; a length below the 16-octet header or
//! above the configured maximum means the stream can no longer be trusted, and the connection should close.

use crate::pdu::{HEADER_LEN, Header};

/// The default largest PDU accepted: room for a 64 KiB `message_payload` and the rest of a data_sm.
pub const DEFAULT_MAX_PDU_LEN: usize = 70_000;

/// A stream that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `command_length` is smaller than a header.
    #[error("command_length {0} is smaller than the 16-octet header")]
    TooShort(u32),
    /// `command_length` is larger than the maximum this side accepts.
    #[error("command_length {len} exceeds the maximum PDU length of {max}")]
    TooLong { len: u32, max: usize },
}

/// The length of the first frame in `buf`, when all of it is there: `Ok(Some(len))`; `Ok(None)` when more octets
/// are needed; an error when the header's `command_length` is impossible.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    let Some(len_octets) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_octets[0], len_octets[1], len_octets[2], len_octets[3]]);
    if (len as usize) < HEADER_LEN {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > max_len {
        return Err(FrameError::TooLong { len, max: max_len });
    }
    Ok((buf.len() >= len as usize).then_some(len as usize))
}

/// The header of the first frame, once its 16 octets are there.
pub fn peek_header(buf: &[u8]) -> Option<Header> {
    Header::peek(buf)
}
