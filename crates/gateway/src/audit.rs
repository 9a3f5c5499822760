//! The ledger's audit events as FHIR R4 AuditEvent resources, for hospital SIEM and compliance
//! tools (`medledger audit --format fhir`).
//!
//! Codes: the event type is DICOM "110110 Patient Record" for reads and writes, "110127 Emergency
//! Override Started" for a break-glass opening and "110136 Security Roles Changed" for consent
//! (grants and revocations); an erasure is a Patient Record delete ("D"), a legal hold an update
//! with the hold in the entity detail; reads, writes and erasures carry the FHIR restful
//! interaction as subtype; the
//! purpose is the HL7 v3 ActReason (PurposeOfUse) code. A change of a member's keys (rotation,
//! custody release and claim, recovery) is "110137 User Security Attributes Changed" with the
//! event in the entity detail. An action a delegate took for the patient
//! has two agents: the delegate (requestor, v3 RoleClass "AGNT") and the patient ("PAT"). Participants and records appear only by
//! their ledger pseudonyms, as on the ledger.

use medledger_ledger::state::{AuditAction, AuditEvent, Decision};
use medledger_types::{ChainId, MemberId, Timestamp};
use serde_json::{Value, json};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const ROLE_CLASS: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleClass";
const SECURITY_SOURCE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";

fn instant(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.get())).to_string()
}

fn identifier(kind: &str, value: String) -> Value {
    json!({"identifier": {"system": format!("urn:medledger:{kind}"), "value": value}})
}

/// `event`, filed in `patient`'s trail on chain `chain`, as an R4 AuditEvent.
pub fn audit_event(chain: &ChainId, patient: &MemberId, event: &AuditEvent) -> Value {
    let (type_code, type_display, action, subtype, record) = match &event.action {
        AuditAction::Read { record, .. } | AuditAction::ReadRestricted { record, .. } => {
            ("110110", "Patient Record", "R", Some("read"), Some(*record))
        }
        AuditAction::Write { record, version } => {
            let interaction = if *version > 1 { "update" } else { "create" };
            ("110110", "Patient Record", if *version > 1 { "U" } else { "C" }, Some(interaction), Some(*record))
        }
        AuditAction::Grant { .. } | AuditAction::Revoke { .. } | AuditAction::Delegate { .. } => {
            ("110136", "Security Roles Changed", "U", None, None)
        }
        AuditAction::Keys { .. } => ("110137", "User Security Attributes Changed", "U", None, None),
        AuditAction::BreakGlass { .. } => ("110127", "Emergency Override Started", "E", None, None),
        AuditAction::Erase { record, .. } => ("110110", "Patient Record", "D", Some("delete"), Some(*record)),
        // A hold changes what may be done with the record, not the record: an update of its status.
        AuditAction::LegalHold { record, .. } => ("110110", "Patient Record", "U", None, *record),
        // A review of the chart's record list: a read of the patient's records (their listing).
        AuditAction::ChartReview => ("110110", "Patient Record", "R", Some("search-type"), None),
    };
    let (outcome, outcome_desc) = match &event.decision {
        Decision::Allowed => ("0", None),
        Decision::Denied { reason } => ("4", Some(reason.as_str())),
    };
    let mut subject = json!({
        "what": identifier("patient", patient.to_hex()),
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
    });
    if let AuditAction::BreakGlass { reason: Some(reason), .. } = &event.action {
        subject["detail"] = json!([{"type": "emergency-reason", "valueString": reason.code()}]);
    }
    if let AuditAction::Keys { event } = &event.action {
        subject["detail"] = json!([{"type": "key-event", "valueString": event.as_str()}]);
    }
    if let AuditAction::LegalHold { hold, .. } = &event.action {
        let value = if *hold { "placed" } else { "lifted" };
        subject["detail"] = json!([{"type": "legal-hold", "valueString": value}]);
    }
    let mut entities = vec![subject];
    if let Some(record) = record {
        entities.push(json!({
            "what": identifier("record", record.to_hex()),
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        }));
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": event.tx.to_hex(),
        "type": {"system": DCM, "code": type_code, "display": type_display},
        "action": action,
        "recorded": instant(event.time),
        "outcome": outcome,
        "agent": [{
            "who": identifier("member", event.actor.to_hex()),
            "type": {"text": event.actor_role.as_str()},
            "requestor": true,
        }],
        "source": {
            "site": format!("block {}", event.height.get()),
            "observer": {"identifier": {"system": "urn:medledger:chain", "value": chain.to_hex()}},
            "type": [{"system": SECURITY_SOURCE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    });
    if let Some(patient) = &event.delegate_of {
        resource["agent"][0]["role"] =
            json!([{"coding": [{"system": ROLE_CLASS, "code": "AGNT", "display": "agent"}]}]);
        resource["agent"].as_array_mut().expect("agents are a list").push(json!({
            "who": identifier("member", patient.to_hex()),
            "type": {"text": "patient"},
            "role": [{"coding": [{"system": ROLE_CLASS, "code": "PAT", "display": "patient"}]}],
            "requestor": false,
        }));
    }
    if let Some(code) = subtype {
        resource["subtype"] = json!([{"system": INTERACTION, "code": code}]);
    }
    if let Some(desc) = outcome_desc {
        resource["outcomeDesc"] = json!(desc);
    }
    if let Some(purpose) = event.purpose {
        resource["purposeOfEvent"] = json!([{"coding": [{"system": ACT_REASON, "code": purpose.as_str()}]}]);
    }
    resource
}

#[cfg(test)]
mod tests {
    use medledger_ledger::EmergencyReason;
    use medledger_types::{Height, OrgId, PurposeOfUse, RecordId, Role, TxId};

    use super::*;

    fn event(action: AuditAction, decision: Decision, purpose: Option<PurposeOfUse>) -> AuditEvent {
        AuditEvent {
            tx: TxId::new([1; 32]),
            height: Height::new(7),
            time: Timestamp::new(1_700_000_000_000),
            actor: MemberId::new([2; 16]),
            actor_org: OrgId::new("org1").unwrap(),
            actor_role: Role::Emergency,
            action,
            purpose,
            decision,
            delegate_of: None,
        }
    }

    #[test]
    fn break_glass_uses_the_dicom_emergency_override_code() {
        let e = event(
            AuditAction::BreakGlass { reason: Some(EmergencyReason::Unconscious), until: None },
            Decision::Allowed,
            Some(PurposeOfUse::Etreat),
        );
        let r = audit_event(&ChainId::new([3; 32]), &MemberId::new([4; 16]), &e);
        assert_eq!(r["type"]["code"], "110127");
        assert_eq!(r["entity"][0]["detail"][0]["valueString"], "unconscious");
        assert_eq!(r["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(r["outcome"], "0");
        assert_eq!(r["recorded"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn a_denied_read_is_a_minor_failure_with_its_reason() {
        let read = AuditAction::Read { record: RecordId::new([5; 16]), version: 1 };
        let e = event(read, Decision::Denied { reason: medledger_ledger::Rejection::AccessDenied }, None);
        let r = audit_event(&ChainId::new([3; 32]), &MemberId::new([4; 16]), &e);
        assert_eq!(
            (r["type"]["code"].as_str(), r["action"].as_str(), r["outcome"].as_str()),
            (Some("110110"), Some("R"), Some("4"))
        );
        assert_eq!(r["outcomeDesc"], "access denied");
        assert_eq!(r["entity"][1]["what"]["identifier"]["value"], "05".repeat(16));
        assert!(r.get("purposeOfEvent").is_none());
    }
}
