//! Round trips over generated PDUs, and random octets against the decoder and the framing.

use proptest::prelude::*;
use smpp::field::{COctetString, Octets, ShortMessage, TimeString};
use smpp::pdu::{
    AlertNotification, Bind, BindResp, CancelSm, DataSm, DestAddress, DestAddresses, Outbind, QuerySm, QuerySmResp,
    ReplaceSm, SubmitMulti, SubmitMultiResp, SubmitSm, SubmitSmResp, UnsuccessSme, UnsuccessSmes,
};
use smpp::tlv::{Bounded, Flag, ItsSessionInfo, NetworkErrorCode, UnknownTlv};
use smpp::{Body, CommandStatus, Pdu, Tlv, Tlvs};

fn cstr<const MAX: usize>() -> impl Strategy<Value = COctetString<MAX>> {
    prop::collection::vec(1u8..=255, 0..MAX).prop_map(|v| COctetString::new(v).expect("fits"))
}

fn time() -> impl Strategy<Value = TimeString> {
    prop_oneof![Just(TimeString::default()), "[0-9]{12}[0-9]{3}[+R-]".prop_map(|s| TimeString::new(&s).expect("16"))]
}

fn sm() -> impl Strategy<Value = ShortMessage> {
    prop::collection::vec(any::<u8>(), 0..=254).prop_map(ShortMessage::new)
}

fn octets(min: usize, max: usize) -> impl Strategy<Value = Octets> {
    prop::collection::vec(any::<u8>(), min..=max).prop_map(Octets)
}

fn tlv() -> impl Strategy<Value = Tlv> {
    prop_oneof![
        any::<u8>().prop_map(Tlv::DestAddrSubunit),
        any::<u16>().prop_map(Tlv::DestTelematicsId),
        any::<u8>().prop_map(Tlv::SourceTelematicsId),
        any::<u32>().prop_map(Tlv::QosTimeToLive),
        cstr::<256>().prop_map(Tlv::AdditionalStatusInfoText),
        cstr::<65>().prop_map(Tlv::ReceiptedMessageId),
        octets(2, 23).prop_map(|o| Tlv::SourceSubaddress(Bounded(o))),
        octets(4, 19).prop_map(|o| Tlv::CallbackNum(Bounded(o))),
        octets(0, 65).prop_map(|o| Tlv::CallbackNumAtag(Bounded(o))),
        any::<u16>().prop_map(Tlv::SarMsgRefNum),
        any::<u8>().prop_map(Tlv::SarTotalSegments),
        any::<u8>().prop_map(Tlv::SarSegmentSeqnum),
        (any::<u8>(), any::<u16>())
            .prop_map(|(t, e)| Tlv::NetworkErrorCode(NetworkErrorCode { network_type: t, error_code: e })),
        octets(0, 600).prop_map(|o| Tlv::MessagePayload(Bounded(o))),
        any::<u8>().prop_map(Tlv::MessageState),
        Just(Tlv::AlertOnMessageDelivery(Flag)),
        (any::<u8>(), any::<u8>())
            .prop_map(|(a, b)| Tlv::ItsSessionInfo(ItsSessionInfo { session_number: a, sequence: b })),
        (0x1400u16..=0x3FFF, octets(0, 40)).prop_map(|(tag, value)| Tlv::Unknown(UnknownTlv { tag, value })),
    ]
}

fn tlvs() -> impl Strategy<Value = Tlvs> {
    prop::collection::vec(tlv(), 0..5).prop_map(Tlvs)
}

fn submit() -> impl Strategy<Value = SubmitSm> {
    (
        (cstr(), any::<u8>(), any::<u8>(), cstr(), any::<u8>(), any::<u8>(), cstr()),
        (any::<u8>(), any::<u8>(), any::<u8>(), time(), time(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        sm(),
        tlvs(),
    )
        .prop_map(|((st, sat, san, sa, dat, dan, da), (esm, pid, pri, sched, val, rd, rip, dc, dmi), sm, tlvs)| {
            SubmitSm {
                service_type: st,
                source_addr_ton: sat,
                source_addr_npi: san,
                source_addr: sa,
                dest_addr_ton: dat,
                dest_addr_npi: dan,
                destination_addr: da,
                esm_class: esm,
                protocol_id: pid,
                priority_flag: pri,
                schedule_delivery_time: sched,
                validity_period: val,
                registered_delivery: rd,
                replace_if_present_flag: rip,
                data_coding: dc,
                sm_default_msg_id: dmi,
                short_message: sm,
                tlvs,
            }
        })
}

fn bind() -> impl Strategy<Value = Bind> {
    (cstr(), cstr(), cstr(), any::<u8>(), any::<u8>(), any::<u8>(), cstr()).prop_map(|(s, p, t, v, ton, npi, r)| Bind {
        system_id: s,
        password: p,
        system_type: t,
        interface_version: v,
        addr_ton: ton,
        addr_npi: npi,
        address_range: r,
    })
}

fn resp() -> impl Strategy<Value = SubmitSmResp> {
    (cstr(), tlvs()).prop_map(|(message_id, tlvs)| SubmitSmResp { message_id, tlvs })
}

fn body() -> impl Strategy<Value = Body> {
    let dest = prop_oneof![
        (any::<u8>(), any::<u8>(), cstr()).prop_map(|(t, n, a)| DestAddress::SmeAddress {
            dest_addr_ton: t,
            dest_addr_npi: n,
            destination_addr: a
        }),
        cstr().prop_map(|dl_name| DestAddress::DistributionList { dl_name }),
    ];
    let unsuccess = (any::<u8>(), any::<u8>(), cstr(), any::<u32>()).prop_map(|(t, n, a, e)| UnsuccessSme {
        dest_addr_ton: t,
        dest_addr_npi: n,
        destination_addr: a,
        error_status_code: CommandStatus::from_u32(e),
    });
    prop_oneof![
        Just(Body::GenericNack),
        bind().prop_map(Body::BindTransmitter),
        bind().prop_map(Body::BindReceiver),
        bind().prop_map(Body::BindTransceiver),
        (cstr(), tlvs()).prop_map(|(system_id, tlvs)| Body::BindTransceiverResp(BindResp { system_id, tlvs })),
        (cstr(), cstr()).prop_map(|(system_id, password)| Body::Outbind(Outbind { system_id, password })),
        Just(Body::Unbind),
        Just(Body::UnbindResp),
        Just(Body::EnquireLink),
        Just(Body::EnquireLinkResp),
        submit().prop_map(Body::SubmitSm),
        submit().prop_map(Body::DeliverSm),
        resp().prop_map(Body::SubmitSmResp),
        resp().prop_map(Body::DeliverSmResp),
        resp().prop_map(Body::DataSmResp),
        (submit(), prop::collection::vec(dest, 0..10)).prop_map(|(s, d)| Body::SubmitMulti(SubmitMulti {
            service_type: s.service_type,
            source_addr_ton: s.source_addr_ton,
            source_addr_npi: s.source_addr_npi,
            source_addr: s.source_addr,
            dest_address: DestAddresses(d),
            esm_class: s.esm_class,
            protocol_id: s.protocol_id,
            priority_flag: s.priority_flag,
            schedule_delivery_time: s.schedule_delivery_time,
            validity_period: s.validity_period,
            registered_delivery: s.registered_delivery,
            replace_if_present_flag: s.replace_if_present_flag,
            data_coding: s.data_coding,
            sm_default_msg_id: s.sm_default_msg_id,
            short_message: s.short_message,
            tlvs: s.tlvs,
        })),
        (cstr(), prop::collection::vec(unsuccess, 0..5), tlvs()).prop_map(|(m, u, t)| {
            Body::SubmitMultiResp(SubmitMultiResp { message_id: m, unsuccess_sme: UnsuccessSmes(u), tlvs: t })
        }),
        (
            cstr(),
            any::<u8>(),
            any::<u8>(),
            cstr(),
            any::<u8>(),
            any::<u8>(),
            cstr(),
            (any::<u8>(), any::<u8>(), any::<u8>(), tlvs())
        )
            .prop_map(|(st, sat, san, sa, dat, dan, da, (esm, rd, dc, tlvs))| Body::DataSm(DataSm {
                service_type: st,
                source_addr_ton: sat,
                source_addr_npi: san,
                source_addr: sa,
                dest_addr_ton: dat,
                dest_addr_npi: dan,
                destination_addr: da,
                esm_class: esm,
                registered_delivery: rd,
                data_coding: dc,
                tlvs,
            })),
        (cstr(), any::<u8>(), any::<u8>(), cstr()).prop_map(|(m, t, n, a)| Body::QuerySm(QuerySm {
            message_id: m,
            source_addr_ton: t,
            source_addr_npi: n,
            source_addr: a
        })),
        (cstr(), time(), any::<u8>(), any::<u8>()).prop_map(|(m, f, s, e)| Body::QuerySmResp(QuerySmResp {
            message_id: m,
            final_date: f,
            message_state: s,
            error_code: e
        })),
        (cstr(), cstr(), cstr(), cstr()).prop_map(|(st, m, sa, da)| Body::CancelSm(CancelSm {
            service_type: st,
            message_id: m,
            source_addr: sa,
            destination_addr: da,
            ..CancelSm::default()
        })),
        Just(Body::CancelSmResp),
        (cstr(), cstr(), time(), time(), any::<u8>(), sm()).prop_map(|(m, sa, sch, val, rd, sm)| Body::ReplaceSm(
            ReplaceSm {
                message_id: m,
                source_addr: sa,
                schedule_delivery_time: sch,
                validity_period: val,
                registered_delivery: rd,
                short_message: sm,
                ..ReplaceSm::default()
            }
        )),
        Just(Body::ReplaceSmResp),
        (cstr(), cstr(), tlvs()).prop_map(|(sa, ea, tlvs)| Body::AlertNotification(AlertNotification {
            source_addr: sa,
            esme_addr: ea,
            tlvs,
            ..AlertNotification::default()
        })),
    ]
}

fn pdu() -> impl Strategy<Value = Pdu> {
    (any::<u32>(), prop_oneof![3 => Just(0u32), 1 => any::<u32>()], body()).prop_map(|(seq, status, body)| Pdu {
        command_status: CommandStatus::from_u32(status),
        sequence_number: seq,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn decode_encode_round_trip(pdu in pdu()) {
        let bytes = pdu.encode().expect("generated PDUs are within the limits");
        prop_assert_eq!(smpp::frame::frame_len(&bytes, 1 << 20), Ok(Some(bytes.len())));
        let back = Pdu::decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &pdu);
        // And the wire form is stable: encode(decode(b)) == b.
        prop_assert_eq!(back.encode().expect("encodes"), bytes);
    }

    #[test]
    fn json_round_trip(pdu in pdu()) {
        let json = serde_json::to_string(&pdu).expect("serializes");
        let back: Pdu = serde_json::from_str(&json).expect("deserializes");
        prop_assert_eq!(back, pdu);
    }

    #[test]
    fn random_octets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = smpp::frame::frame_len(&bytes, 1000);
        match Pdu::decode(&bytes) {
            Ok(pdu) => { let _ = pdu.encode(); }
            Err(e) => { let _ = e.response(); }
        }
    }

    #[test]
    fn mutated_pdus_never_panic(pdu in pdu(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = pdu.encode().expect("encodes");
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        match Pdu::decode(&bytes) {
            Ok(p) => { let _ = p.encode(); }
            Err(e) => { let _ = e.response(); }
        }
    }

    #[test]
    fn receipts_and_times_take_any_text(s in any::<String>()) {
        let _ = smpp::receipt::Receipt::parse(&s);
        let _ = smpp::time::SmppTime::parse(&s);
        let _ = smpp::receipt::id_variants(&s);
    }
}
