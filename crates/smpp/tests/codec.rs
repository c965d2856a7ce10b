//! The tokio codec over a real byte stream: PDUs split anywhere, a malformed body answered without losing the
//! stream, an impossible length ending it.

use futures_util::StreamExt;
use smpp::codec::{CodecError, SmppCodec};
use smpp::{Body, CommandStatus, Pdu};
use tokio_util::codec::FramedRead;

fn wire(pdus: &[Pdu]) -> Vec<u8> {
    pdus.iter().flat_map(|p| p.encode().expect("encodes")).collect()
}

/// A reader that hands out `chunk` octets at a time, to split PDUs at every offset.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let end = (self.pos + self.chunk).min(self.data.len());
        let n = (end - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn frames_survive_any_split_and_a_bad_body() {
    let good = Pdu::new(1, Body::EnquireLink);
    let mut bytes = wire(std::slice::from_ref(&good));
    // A well-framed enquire_link with two stray octets: an item error, not the end of the stream.
    bytes.extend_from_slice(&[0, 0, 0, 18, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 2, 0xAA, 0xBB]);
    bytes.extend(wire(&[Pdu::new(3, Body::UnbindResp)]));
    for chunk in 1..=bytes.len() {
        let reader = Trickle { data: bytes.clone(), pos: 0, chunk };
        let items: Vec<_> = FramedRead::new(reader, SmppCodec::default()).collect().await;
        assert_eq!(items.len(), 3, "chunk {chunk}");
        assert_eq!(items[0].as_ref().expect("frames").as_ref().expect("decodes"), &good);
        let err = items[1].as_ref().expect("frames").as_ref().expect_err("bad body");
        let answer = err.response().expect("a request is answered");
        assert_eq!((answer.sequence_number, answer.command_status), (2, CommandStatus::ESME_RINVCMDLEN));
        assert_eq!(items[2].as_ref().expect("frames").as_ref().expect("decodes").sequence_number, 3);
    }
}

#[tokio::test]
async fn impossible_length_ends_the_stream() {
    for header in [[0u8, 0, 0, 8], [0x7F, 0xFF, 0xFF, 0xFF]] {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&[0; 12]);
        let mut framed = FramedRead::new(bytes.as_slice(), SmppCodec::new(4096));
        let item = framed.next().await.expect("an item");
        assert!(matches!(item, Err(CodecError::Frame(_))), "{item:?}");
    }
}

#[tokio::test]
async fn truncated_stream_is_an_error_at_eof() {
    let bytes = wire(&[Pdu::new(1, Body::EnquireLink)]);
    let mut framed = FramedRead::new(&bytes[..10], SmppCodec::default());
    // tokio-util reports bytes left over at EOF as an I/O error.
    assert!(matches!(framed.next().await, Some(Err(CodecError::Io(_)))));
}
