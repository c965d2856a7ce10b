//! The properties the `pdu_decode` fuzz target holds, here so that its regression files are replayed by the
//! normal tests with the very same checks. Panics when a property fails.

use crate::Pdu;

/// Frames and decodes any octets: no panic; whatever decodes encodes and decodes to the same PDU; every malformed
/// request gets an answer that encodes.
pub fn check_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some(len)) = crate::frame::frame_len(rest, crate::frame::DEFAULT_MAX_PDU_LEN) {
        match Pdu::decode(&rest[..len]) {
            Ok(pdu) => {
                let bytes = pdu.encode().expect("a decoded PDU encodes");
                let again = Pdu::decode(&bytes).expect("an encoded PDU decodes");
                assert_eq!(again, pdu);
            }
            Err(e) => {
                if let Some(answer) = e.response() {
                    answer.encode().expect("an answer encodes");
                }
            }
        }
        rest = &rest[len..];
    }
    let _ = Pdu::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::receipt::Receipt::parse(text);
        let _ = crate::time::SmppTime::parse(text);
        let _ = crate::receipt::id_variants(text);
    }
}
