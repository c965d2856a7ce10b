//! A tokio-util codec over the sans-IO framing: each item is one PDU, or the [`PduError`] of a well-framed PDU
//! whose body is malformed, so that the session can answer it (see [`PduError::response`]) and go on. Only a
//! stream that cannot be framed ends in an error.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{DEFAULT_MAX_PDU_LEN, FrameError, frame_len};
use crate::pdu::{Pdu, PduError};

/// The codec; `max_len` bounds every PDU read.
#[derive(Debug, Clone)]
pub struct SmppCodec {
    max_len: usize,
}

impl Default for SmppCodec {
    fn default() -> Self {
        SmppCodec { max_len: DEFAULT_MAX_PDU_LEN }
    }
}

impl SmppCodec {
    pub fn new(max_len: usize) -> Self {
        SmppCodec { max_len }
    }
}

/// Why the stream ended.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Encode(#[from] crate::field::EncodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for SmppCodec {
    type Item = Result<Pdu, PduError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match frame_len(src, self.max_len)? {
            Some(len) => {
                let item = Pdu::decode(&src[..len]);
                src.advance(len);
                Ok(Some(item))
            }
            None => {
                if src.len() >= 4 {
                    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                    src.reserve(len.saturating_sub(src.len()));
                }
                Ok(None)
            }
        }
    }
}

impl Encoder<&Pdu> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: &Pdu, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let bytes = pdu.encode()?;
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}

impl Encoder<Pdu> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), Self::Error> {
        self.encode(&pdu, dst)
    }
}
