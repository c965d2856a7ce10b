//! `smsgate pdu decode|encode`: one SMPP PDU from hex to JSON, and back.

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};
use smpp::{Body, Pdu};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print one PDU, given in hex, as JSON: command name, status, sequence number, every field and TLV.
    Decode {
        /// The PDU in hex (spaces and a 0x prefix allowed); read from standard input when absent.
        hex: Option<String>,
    },
    /// Read one PDU as JSON (the form `decode` prints) and print it in hex.
    Encode {
        /// The JSON; read from standard input when absent.
        json: Option<String>,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Decode { hex } => {
            let input = crate::cli::arg_or_stdin(hex)?;
            let pdu = decode_hex(&input)?;
            println!("{}", serde_json::to_string_pretty(&to_json(&pdu)?)?);
        }
        Command::Encode { json } => {
            let input = crate::cli::arg_or_stdin(json)?;
            let pdu: Pdu = serde_json::from_str(&input).map_err(|e| anyhow!("invalid PDU JSON: {e}"))?;
            let bytes = pdu.encode().map_err(|e| anyhow!("cannot encode {}: {e}", pdu.body.name()))?;
            println!("{}", hex::encode(bytes));
        }
    }
    Ok(())
}

/// Hex text to a PDU, with an error that names what is wrong.
pub fn decode_hex(input: &str) -> anyhow::Result<Pdu> {
    let cleaned: String = input.trim().trim_start_matches("0x").chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(&cleaned).map_err(|e| anyhow!("invalid hex: {e}"))?;
    if bytes.len() < smpp::pdu::HEADER_LEN {
        bail!("a PDU has at least 16 octets; got {}", bytes.len());
    }
    let max = smpp::frame::DEFAULT_MAX_PDU_LEN;
    match smpp::frame::frame_len(&bytes, max).context("invalid PDU")? {
        Some(len) if len == bytes.len() => {}
        Some(len) => bail!("command_length says {len} octets but {} were given", bytes.len()),
        None => bail!(
            "command_length says {} octets but only {} were given",
            smpp::Header::peek(&bytes).map_or(0, |h| h.command_length),
            bytes.len()
        ),
    }
    Pdu::decode(&bytes).map_err(|e| {
        let h = e.header();
        anyhow!("invalid PDU (sequence_number {}, answer {}): {e}", h.sequence_number, e.status())
    })
}

/// The PDU as a JSON object: `command`, `command_id`, `command_status`, `sequence_number`, then the body's fields
/// in wire order; for a short message with text, `short_message_text` too.
pub fn to_json(pdu: &Pdu) -> anyhow::Result<Value> {
    let Value::Object(mut fields) = serde_json::to_value(pdu)? else {
        bail!("a PDU serializes to an object");
    };
    let mut out = Map::new();
    for key in ["command", "command_id", "command_status", "sequence_number"] {
        if key == "command_id" {
            out.insert(key.into(), Value::String(format!("{:#010x}", pdu.command_id())));
        } else if let Some(v) = fields.shift_remove(key) {
            out.insert(key.into(), v);
        }
    }
    let text = match &pdu.body {
        Body::SubmitSm(b) | Body::DeliverSm(b) => {
            short_message_text(b.esm_class, b.data_coding, b.short_message.as_bytes())
        }
        Body::SubmitMulti(b) => short_message_text(b.esm_class, b.data_coding, b.short_message.as_bytes()),
        _ => None,
    };
    for (k, v) in fields {
        let is_sm = k == "short_message";
        out.insert(k, v);
        if is_sm && let Some(t) = &text {
            out.insert("short_message_text".into(), Value::String(t.clone()));
        }
    }
    Ok(Value::Object(out))
}

fn short_message_text(esm_class: u8, data_coding: u8, sm: &[u8]) -> Option<String> {
    let udhi = esm_class & 0x40 != 0;
    sms_text::decode::decode_short_message(data_coding, udhi, sm).ok()?.text
}
