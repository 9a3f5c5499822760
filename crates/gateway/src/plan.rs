//! Planning a set of resources (a transaction Bundle, or a file being imported) before anything is
//! written: validate each, give each a record id, find each one's patient, and rewrite the
//! references between them (`urn:uuid:` fullUrls, the source system's `Type/id`) to the ids they
//! get here. Pure: the caller enrols patients and writes.

use std::collections::HashMap;

use medledger_sdk::Identity;
use medledger_types::{MemberId, RecordId};
use serde_json::{Map, Value};

use crate::fhir::{self, FhirError};

/// Checks every item strictly as R4; the first invalid one refuses them all, naming its entry.
pub fn check_items(items: &[Item]) -> Result<(), FhirError> {
    for (i, item) in items.iter().enumerate() {
        let text = serde_json::to_string(&item.resource).map_err(|_| FhirError::invalid("unserializable"))?;
        fhir::validate(&text).map_err(|mut e| {
            e.diagnostics = format!("entry {i}: {}", e.diagnostics);
            e
        })?;
    }
    Ok(())
}

pub struct Item {
    pub full_url: Option<String>,
    pub resource: Map<String, Value>,
}

/// A resource ready to write.
pub struct Planned {
    /// Its position in the input.
    pub index: usize,
    pub record: RecordId,
    pub patient: MemberId,
    pub resource: Map<String, Value>,
}

/// The planned writes, and the entries skipped (index, reason).
pub type Resolved = (Vec<Planned>, Vec<(usize, &'static str)>);

pub struct Plan {
    items: Vec<Item>,
    /// The patient key of each Patient entry (by index).
    patient_keys: HashMap<usize, String>,
    /// Every way the input names a Patient entry → its patient key.
    aliases: HashMap<String, String>,
    /// Patient keys of Patient entries, each needing a chart (in input order).
    pub new_patients: Vec<String>,
    /// Patients referenced by member id (`Patient/<32 hex>`), to be checked by the caller.
    pub existing_patients: Vec<MemberId>,
    /// Patients referenced but neither in the input nor members: the caller enrols them (import)
    /// or refuses (transaction).
    pub unresolved_patients: Vec<String>,
}

/// Whether `id` is a UUID (8-4-4-4-12 hex digits).
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// See [`Plan::match_identifier`].
pub fn patient_identifier(resource: &Map<String, Value>) -> Option<String> {
    let identifiers = resource.get("identifier")?.as_array()?;
    identifiers
        .iter()
        .filter_map(|id| {
            let system = id.get("system").and_then(Value::as_str).filter(|s| !s.is_empty())?;
            let value = id.get("value").and_then(Value::as_str).filter(|v| !v.is_empty())?;
            let codings = id.get("type").and_then(|t| t.get("coding")).and_then(Value::as_array);
            let mrn = codings.into_iter().flatten().any(|c| c.get("code").and_then(Value::as_str) == Some("MR"));
            Some((!mrn, format!("{system}|{value}")))
        })
        .min()
        .map(|(_, identifier)| identifier)
}

/// The chart a patient with `identifier` (`system|value`, see [`patient_identifier`]) has in the
/// organisation whose custodian admin is `custodian`: a keyed hash of the identifier under the
/// admin's secret (a blind index: nothing of the identifier reaches the ledger), so the import,
/// a POST and a transaction all find one chart for one patient.
pub fn identified_patient(custodian: &Identity, identifier: &str) -> medledger_sdk::Result<MemberId> {
    custodian.local_id(format!("import/patient-identifier/{identifier}").as_bytes()).map(MemberId::new)
}

/// The record of a resource known by `source` (its identity in the source system, e.g.
/// `Patient#system|value` or `Observation/UUID`) in `patient`'s chart: the same keyed hash for
/// every writer holding the custodian's secret, so the same resource is never written twice.
pub fn source_record(custodian: &Identity, patient: &MemberId, source: &str) -> medledger_sdk::Result<RecordId> {
    custodian.local_id(format!("import/record/{patient}/{source}").as_bytes()).map(RecordId::new)
}

/// The canonical key of a patient reference: `Patient/id`, or the `urn:` as written.
fn reference_key(reference: &str) -> String {
    match fhir::reference_target(reference) {
        Some((kind, id)) => format!("{kind}/{id}"),
        None => reference.to_string(),
    }
}

impl Plan {
    /// Collects the patients the items name (the items are valid R4 already: see
    /// [`check_items`]). `known` maps patient keys resolved earlier (an import's previous
    /// files) to members.
    pub fn new(items: Vec<Item>, known: impl Fn(&str) -> Option<MemberId>) -> Result<Self, FhirError> {
        let mut patient_keys = HashMap::new();
        let mut aliases = HashMap::new();
        let mut new_patients = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if !fhir::is_resource_type(fhir::resource_type(&item.resource)) {
                return Err(FhirError::invalid(format!("entry {i}: this resource type is not stored as a record")));
            }
            if fhir::resource_type(&item.resource) == "Patient" {
                let id = item.resource.get("id").and_then(Value::as_str).filter(|id| fhir::is_id(id));
                let key = item
                    .full_url
                    .clone()
                    .or_else(|| id.map(|id| format!("Patient/{id}")))
                    .unwrap_or_else(|| format!("entry/{i}"));
                if let Some(url) = &item.full_url {
                    aliases.insert(reference_key(url), key.clone());
                    aliases.insert(url.clone(), key.clone());
                }
                if let Some(id) = id {
                    aliases.insert(format!("Patient/{id}"), key.clone());
                }
                patient_keys.insert(i, key.clone());
                new_patients.push(key);
            }
        }
        let mut existing_patients = Vec::new();
        let mut unresolved_patients = Vec::new();
        for item in &items {
            let Some(reference) = fhir::patient_reference(&item.resource) else { continue };
            let key = reference_key(&reference);
            if aliases.contains_key(&reference) || aliases.contains_key(&key) || known(&key).is_some() {
                continue;
            }
            match key.strip_prefix("Patient/").and_then(|id| id.parse::<MemberId>().ok()) {
                Some(member) => existing_patients.push(member),
                None => unresolved_patients.push(key),
            }
        }
        existing_patients.sort();
        existing_patients.dedup();
        unresolved_patients.sort();
        unresolved_patients.dedup();
        Ok(Plan { items, patient_keys, aliases, new_patients, existing_patients, unresolved_patients })
    }

    /// Every way the input names a Patient entry, with that entry's patient key.
    pub fn aliases(&self) -> &HashMap<String, String> {
        &self.aliases
    }

    /// The identifier a Patient entry (by its patient key) is recognised by across imports and
    /// export forms: its medical record number (`type` MR) if it has one, else the first of its
    /// identifiers in `system|value` order; `None` without an identifier with both.
    pub fn match_identifier(&self, key: &str) -> Option<String> {
        let (&i, _) = self.patient_keys.iter().find(|(_, k)| k.as_str() == key)?;
        patient_identifier(&self.items[i].resource)
    }

    /// Assigns ids and rewrites references. `members` gives the member of every key in
    /// `new_patients` and `unresolved_patients` (and `known` ones); `record_id(i, source)` the
    /// record id of entry i, where `source` is the entry's patient and its identity in the source
    /// system (`Patient#identifier` for the patient's own entry, else `Type/uuid` when its id or
    /// full URL is a UUID) when known.
    /// An entry that names no patient (Practitioner, Organization, Medication...) goes to
    /// `directory`, the writer's organisation's directory, whatever else the input holds.
    /// Returns the planned writes and the entries skipped (index, reason): those with no patient
    /// when there is no directory to put them in.
    pub fn resolve(
        self,
        members: &HashMap<String, MemberId>,
        directory: Option<MemberId>,
        mut record_id: impl FnMut(usize, Option<(MemberId, String)>) -> RecordId,
    ) -> Result<Resolved, FhirError> {
        let member_of = |key: &str| members.get(key).copied();
        // Each entry's patient (or the directory) and source identity, from the input as written.
        let sources: Vec<Option<(MemberId, String)>> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                // A Patient entry is the same resource again when its identifier is (the chart is
                // the identifier's); without one, it is known by its place in the input only.
                if let Some(key) = self.patient_keys.get(&i) {
                    let identifier = patient_identifier(&item.resource)?;
                    return member_of(key).map(|m| (m, format!("Patient#{identifier}")));
                }
                let patient = fhir::patient_reference(&item.resource).and_then(|r| {
                    let key = reference_key(&r);
                    let aliased = self.aliases.get(&r).or_else(|| self.aliases.get(&key));
                    aliased
                        .and_then(|k| member_of(k))
                        .or_else(|| member_of(&key))
                        .or_else(|| key.strip_prefix("Patient/").and_then(|id| id.parse().ok()))
                });
                // The same resource as a Bundle entry (`urn:uuid:X`, no id) and as an NDJSON line
                // (id X) has one source identity: `Type/X`.
                let kind = fhir::resource_type(&item.resource);
                let id = item.resource.get("id").and_then(Value::as_str).map(str::to_string).or_else(|| {
                    let url = item.full_url.as_deref()?;
                    match url.strip_prefix("urn:uuid:") {
                        Some(uuid) => Some(uuid.to_string()),
                        None => fhir::reference_target(url).map(|(_, id)| id.to_string()),
                    }
                });
                // Only an id unique by construction (a UUID) names the same resource across
                // exports: `Observation/1` from two source systems are two resources.
                let source = id.filter(|id| is_uuid(id)).map(|id| format!("{kind}/{id}"));
                patient.or(directory).zip(source)
            })
            .collect();
        let mut rewrite: HashMap<String, String> = HashMap::new();
        for (key, member) in members {
            rewrite.insert(key.clone(), format!("Patient/{}", member.to_hex()));
        }
        for (alias, key) in &self.aliases {
            let member =
                member_of(key).ok_or_else(|| FhirError::new(500, "exception", "a patient was not enrolled"))?;
            rewrite.insert(alias.clone(), format!("Patient/{}", member.to_hex()));
        }
        let mut ids = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.iter().enumerate() {
            let record = record_id(i, sources[i].clone());
            ids.push(record);
            if self.patient_keys.contains_key(&i) {
                continue;
            }
            let kind = fhir::resource_type(&item.resource);
            let new = format!("{kind}/{}", record.to_hex());
            if let Some(url) = &item.full_url {
                rewrite.insert(url.clone(), new.clone());
            }
            if let Some(id) = item.resource.get("id").and_then(Value::as_str) {
                rewrite.insert(format!("{kind}/{id}"), new);
            }
        }
        let mut planned = Vec::with_capacity(self.items.len());
        let mut skipped = Vec::new();
        for (i, item) in self.items.into_iter().enumerate() {
            let mut resource = item.resource;
            for value in resource.values_mut() {
                fhir::rewrite_references(value, &rewrite);
            }
            let patient = match self.patient_keys.get(&i) {
                Some(key) => member_of(key),
                None => fhir::patient_reference(&resource)
                    .and_then(|r| fhir::reference_target(&r).map(|(_, id)| id.to_string()))
                    .and_then(|id| id.parse::<MemberId>().ok())
                    .or(directory),
            };
            let Some(patient) = patient else {
                skipped.push((i, "names no patient (not patient data), and there is no directory to keep it in"));
                continue;
            };
            let id = if self.patient_keys.contains_key(&i) { patient.to_hex() } else { ids[i].to_hex() };
            resource.insert("id".into(), Value::String(id));
            planned.push(Planned { index: i, record: ids[i], patient, resource });
        }
        Ok((planned, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(url: &str, v: Value) -> Item {
        Item { full_url: Some(url.into()), resource: v.as_object().unwrap().clone() }
    }

    #[test]
    fn a_bundle_is_planned_with_references_rewritten() {
        let items = vec![
            item("urn:uuid:p", json!({"resourceType": "Patient", "gender": "female"})),
            item("urn:uuid:d", json!({"resourceType": "Practitioner"})),
            item(
                "urn:uuid:o",
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": "urn:uuid:p"}, "performer": [{"reference": "urn:uuid:d"}]}),
            ),
        ];
        let plan = Plan::new(items, |_| None).unwrap();
        assert_eq!(plan.new_patients, vec!["urn:uuid:p".to_string()]);
        assert!(plan.unresolved_patients.is_empty() && plan.existing_patients.is_empty());
        let member = MemberId::new([5; 16]);
        let members = HashMap::from([("urn:uuid:p".to_string(), member)]);
        let directory = MemberId::new([6; 16]);
        let (planned, skipped) =
            plan.resolve(&members, Some(directory), |i, _| RecordId::new([i as u8 + 1; 16])).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(planned.len(), 3);
        let owners: Vec<MemberId> = planned.iter().map(|p| p.patient).collect();
        assert_eq!(owners, vec![member, directory, member], "the practitioner goes to the directory");
        assert_eq!(planned[0].resource["id"], member.to_hex());
        let obs = &planned[2].resource;
        assert_eq!(obs["subject"]["reference"], format!("Patient/{}", member.to_hex()));
        assert_eq!(obs["performer"][0]["reference"], format!("Practitioner/{}", RecordId::new([2; 16]).to_hex()));
        assert_eq!(obs["id"], RecordId::new([3; 16]).to_hex());
    }

    #[test]
    fn patients_outside_the_input_are_reported_and_patientless_entries_skipped_without_a_directory() {
        let member = MemberId::new([9; 16]);
        let items = vec![
            item("a", json!({"resourceType": "Condition", "subject": {"reference": "Patient/example"}})),
            item(
                "b",
                json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{}", member.to_hex())}}),
            ),
            item("c", json!({"resourceType": "Organization", "name": "x"})),
        ];
        let plan = Plan::new(items, |_| None).unwrap();
        assert_eq!(plan.unresolved_patients, vec!["Patient/example".to_string()]);
        assert_eq!(plan.existing_patients, vec![member]);
        let other = MemberId::new([1; 16]);
        let members = HashMap::from([("Patient/example".to_string(), other)]);
        let (planned, skipped) = plan.resolve(&members, None, |i, _| RecordId::new([i as u8; 16])).unwrap();
        assert_eq!(planned.iter().map(|p| p.patient).collect::<Vec<_>>(), vec![other, member]);
        assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn one_invalid_entry_refuses_the_whole_input() {
        let items = vec![
            item("a", json!({"resourceType": "Patient"})),
            item("b", json!({"resourceType": "Observation", "status": "final"})),
        ];
        let e = check_items(&items).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.diagnostics.starts_with("entry 1:"), "{}", e.diagnostics);
    }
}
