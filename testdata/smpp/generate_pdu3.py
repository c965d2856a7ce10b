"""Writes pdu3_vectors.json: SMPP 3.4 PDUs encoded by an independent implementation, smpp.pdu3 0.6 (PyPI).

Run by hand when vectors are added (python -m venv v && v/bin/pip install smpp.pdu3==0.6 && v/bin/python
generate_pdu3.py); the tests only read the JSON. The `pdu` field of each vector, smsgate's JSON form of the same
PDU, is filled in by `cargo run -- pdu decode` and then checked by hand against the inputs below.
"""
import binascii
import json

from smpp.pdu import operations as op
from smpp.pdu import pdu_types as t
from smpp.pdu import smpp_time
from smpp.pdu.pdu_encoding import PDUEncoder

S = t.CommandStatus

CASES = [
    ("bind_transmitter", op.BindTransmitter(seqNum=1, system_id="smppclient1", password="password",
        system_type="OTA", interface_version=0x34, addr_ton=t.AddrTon.INTERNATIONAL, addr_npi=t.AddrNpi.ISDN,
        address_range="")),
    ("bind_receiver", op.BindReceiver(seqNum=2, system_id="rx", password="pw", system_type="",
        interface_version=0x34, addr_ton=t.AddrTon.UNKNOWN, addr_npi=t.AddrNpi.UNKNOWN, address_range="^44")),
    ("bind_transceiver", op.BindTransceiver(seqNum=3, system_id="trx", password="secret", system_type="",
        interface_version=0x34, addr_ton=t.AddrTon.UNKNOWN, addr_npi=t.AddrNpi.UNKNOWN, address_range="")),
    ("bind_transmitter_resp", op.BindTransmitterResp(seqNum=1, system_id="SMSC")),
    ("bind_receiver_resp with sc_interface_version", op.BindReceiverResp(seqNum=2, system_id="SMSC",
        sc_interface_version=0x34)),
    ("bind_transceiver_resp", op.BindTransceiverResp(seqNum=3, system_id="smsgate")),
    ("bind_transceiver_resp error without body", op.BindTransceiverResp(seqNum=3, status=S.ESME_RBINDFAIL)),
    ("outbind", op.Outbind(seqNum=9, system_id="smsc", password="pw")),
    ("unbind", op.Unbind(seqNum=10)),
    ("unbind_resp", op.UnbindResp(seqNum=10)),
    ("generic_nack", op.GenericNack(seqNum=11, status=S.ESME_RINVCMDID)),
    ("enquire_link", op.EnquireLink(seqNum=12)),
    ("enquire_link_resp", op.EnquireLinkResp(seqNum=12)),
    ("submit_sm minimal", op.SubmitSM(seqNum=1, source_addr="Shop", destination_addr="447700900123",
        short_message="Hello")),
    ("submit_sm full", op.SubmitSM(seqNum=0x7FFFFFFF, service_type="CMT", source_addr_ton=t.AddrTon.ALPHANUMERIC,
        source_addr_npi=t.AddrNpi.UNKNOWN, source_addr="smsgate", dest_addr_ton=t.AddrTon.INTERNATIONAL,
        dest_addr_npi=t.AddrNpi.ISDN, destination_addr="15551234567",
        esm_class=t.EsmClass(t.EsmClassMode.STORE_AND_FORWARD, t.EsmClassType.DEFAULT, [t.EsmClassGsmFeatures.UDHI_INDICATOR_SET]),
        protocol_id=0, priority_flag=t.PriorityFlag.LEVEL_1, schedule_delivery_time=None,
        validity_period=smpp_time.parse("000001000000000R"),
        registered_delivery=t.RegisteredDelivery(t.RegisteredDeliveryReceipt.SMSC_DELIVERY_RECEIPT_REQUESTED),
        replace_if_present_flag=t.ReplaceIfPresentFlag.DO_NOT_REPLACE,
        data_coding=t.DataCoding(t.DataCodingScheme.DEFAULT, t.DataCodingDefault.UCS2), sm_default_msg_id=0,
        short_message=binascii.unhexlify("050003420201004800e9"))),
    ("submit_sm with SAR and port TLVs", op.SubmitSM(seqNum=5, source_addr="1000", destination_addr="2000",
        short_message="part one", sar_msg_ref_num=0x1234, sar_total_segments=2, sar_segment_seqnum=1,
        source_port=0x0B84, destination_port=0x23F0, user_message_reference=77)),
    ("submit_sm with message_payload", op.SubmitSM(seqNum=6, source_addr="1000", destination_addr="2000",
        short_message=None, message_payload="x" * 300)),
    ("submit_sm_resp", op.SubmitSMResp(seqNum=1, message_id="a1b2c3d4")),
    ("submit_sm_resp throttled", op.SubmitSMResp(seqNum=4, status=S.ESME_RTHROTTLED)),
    ("deliver_sm receipt", op.DeliverSM(seqNum=21, source_addr_ton=t.AddrTon.INTERNATIONAL,
        source_addr_npi=t.AddrNpi.ISDN, source_addr="447700900123", destination_addr="Shop",
        esm_class=t.EsmClass(t.EsmClassMode.DEFAULT, t.EsmClassType.SMSC_DELIVERY_RECEIPT),
        short_message="id:a1b2c3d4 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:Hello",
        receipted_message_id="a1b2c3d4", message_state=t.MessageState.DELIVERED)),
    ("deliver_sm_resp", op.DeliverSMResp(seqNum=21)),
    # submit_multi and submit_multi_resp: smpp.pdu3 cannot encode them; see spec_vectors.json.
    ("data_sm", op.DataSM(seqNum=40, source_addr="12345", destination_addr="67890",
        message_payload="data via data_sm", qos_time_to_live=3600)),
    ("data_sm_resp", op.DataSMResp(seqNum=40, message_id="d-40")),
    ("query_sm", op.QuerySM(seqNum=50, message_id="a1b2c3d4", source_addr="Shop")),
    ("query_sm_resp", op.QuerySMResp(seqNum=50, message_id="a1b2c3d4", final_date=smpp_time.parse("240101120100000+"),
        message_state=t.MessageState.DELIVERED, error_code=0)),
    ("cancel_sm", op.CancelSM(seqNum=60, message_id="a1b2c3d4", source_addr="Shop",
        destination_addr="447700900123")),
    ("cancel_sm_resp", op.CancelSMResp(seqNum=60)),
    # replace_sm: smpp.pdu3 0.6 fails on its sm_length; see spec_vectors.json.
    ("replace_sm_resp", op.ReplaceSMResp(seqNum=70)),
    ("alert_notification", op.AlertNotification(seqNum=80, source_addr="447700900123", esme_addr="smsgate",
        ms_availability_status=t.MsAvailabilityStatus.AVAILABLE)),
]


def main():
    enc = PDUEncoder()
    vectors = []
    for name, pdu in CASES:
        raw = enc.encode(pdu)
        vectors.append({"name": name, "hex": binascii.hexlify(raw).decode()})
    out = {
        "source": "encoded by smpp.pdu3 0.6 (PyPI), an independent SMPP 3.4 implementation; see generate_pdu3.py",
        "vectors": vectors,
    }
    with open("pdu3_vectors.json", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
