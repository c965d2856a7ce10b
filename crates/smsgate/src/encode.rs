//! `smsgate encode`: the plan for a text, for people who ask "how many segments will this cost me?".

use anyhow::{Context, bail};
use serde_json::json;
use sms_text::{Encoding, Language, Options, Reference};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Replace look-alike characters (curly quotes, long dashes, ellipsis, odd spaces) by GSM ones where that
    /// avoids UCS-2.
    #[arg(long)]
    smart: bool,
    /// Allow these national language shift tables (3GPP TS 23.038), comma-separated: names or ISO codes
    /// (tr, es, pt, bn, gu, hi, kn, ml, or, pa, ta, te, ur), or "all".
    #[arg(long, value_delimiter = ',')]
    national: Vec<String>,
    /// Use a 16-bit concatenation reference (7-octet UDH) instead of an 8-bit one.
    #[arg(long)]
    ref16: bool,
    /// The concatenation reference to write into the UDH.
    #[arg(long, default_value_t = 0)]
    reference: u16,
    /// Keep the text's final newline when it comes from standard input.
    #[arg(long)]
    keep_newline: bool,
    /// The text; read from standard input when absent.
    text: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let from_stdin = args.text.is_none();
    let mut text = crate::cli::arg_or_stdin(args.text)?;
    if from_stdin && !args.keep_newline {
        // `echo hi | smsgate encode` should count "hi", not "hi\n".
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
    }
    let mut national = Vec::new();
    for name in &args.national {
        if name.eq_ignore_ascii_case("all") {
            national.extend(Language::ALL.iter().copied().filter(|l| *l != Language::Default));
            continue;
        }
        match Language::from_name(name.trim()) {
            Some(Language::Default) | None => bail!(
                "unknown national language {name:?}; use one of turkish, spanish, portuguese, bengali, gujarati, \
                 hindi, kannada, malayalam, oriya, punjabi, tamil, telugu, urdu (or tr, es, pt, ...), or all"
            ),
            Some(l) => national.push(l),
        }
    }
    let reference = if args.ref16 {
        Reference::Sixteen(args.reference)
    } else {
        Reference::Eight(u8::try_from(args.reference).context("--reference above 255 needs --ref16")?)
    };
    let options = Options { national, smart: args.smart, reference };
    let plan = sms_text::plan(&text, &options)?;
    let unit = match plan.encoding {
        Encoding::Gsm7(_) => "septets",
        Encoding::Ucs2 => "utf16_units",
    };
    let ucs2: Vec<String> = plan.ucs2_characters().iter().map(|c| c.to_string()).collect();
    if args.json {
        let parts: Vec<_> = plan
            .segments
            .iter()
            .map(|s| {
                json!({
                    "udh": hex::encode(&s.udh),
                    "units": s.units,
                    "capacity": s.capacity,
                    "short_message": hex::encode(s.short_message()),
                    "user_data": hex::encode(s.user_data(plan.encoding)),
                })
            })
            .collect();
        let (locking, single) = match plan.encoding {
            Encoding::Gsm7(cs) => (cs.locking().name(), cs.single().name()),
            Encoding::Ucs2 => ("", ""),
        };
        let out = json!({
            "encoding": plan.encoding.name(),
            "data_coding": plan.encoding.data_coding(),
            "segments": plan.segments.len(),
            "characters": plan.characters,
            "units": plan.units,
            "unit": unit,
            "units_used_in_last_segment": plan.units_used_in_last_segment(),
            "units_left_in_last_segment": plan.units_left_in_last_segment(),
            "ucs2_characters": ucs2,
            "locking_shift": locking,
            "single_shift": single,
            "smart_replacements": plan.replaced,
            "text": plan.text,
            "parts": parts,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("encoding:    {} (data_coding {:#04x})", plan.encoding.name(), plan.encoding.data_coding());
    println!("characters:  {}", plan.characters);
    println!("segments:    {}", plan.segments.len());
    println!(
        "units:       {} {unit}; the last segment uses {} and has {} left",
        plan.units,
        plan.units_used_in_last_segment(),
        plan.units_left_in_last_segment()
    );
    if !ucs2.is_empty() {
        println!("ucs2 forced by: {}", ucs2.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(" "));
    }
    if plan.replaced > 0 {
        println!("smart encoding replaced {} characters: {:?}", plan.replaced, plan.text);
    }
    for (i, s) in plan.segments.iter().enumerate() {
        let udh = if s.udh.is_empty() { "-".to_string() } else { hex::encode(&s.udh) };
        println!("  part {}: {} of {} {unit}, udh {udh}", i + 1, s.units, s.capacity);
    }
    Ok(())
}
