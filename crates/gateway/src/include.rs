//! `_include` and `_revinclude` (FHIR R4 search): the resources a page of matches references,
//! and those that reference it, added to the searchset with `search.mode` `include`. Each is an
//! audited read like any other; one the member may not read is left out. Which resources refer
//! to the page is found in the index's local copies, so only those are read.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::fhir::{self, FhirError};
use crate::service::{FhirResult, Gateway, Search, Stored};

/// Most resources one search adds by `_include` and `_revinclude` together.
pub const INCLUDED_MAX: usize = 100;
/// Most `_include` and `_revinclude` parameters one search takes.
pub const SPECS_MAX: usize = 8;

/// One `_include` or `_revinclude` value: `SourceType:param[:TargetType]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub source: String,
    pub param: String,
    pub target: Option<String>,
}

impl Spec {
    pub fn parse(value: &str) -> FhirResult<Spec> {
        let mut parts = value.split(':');
        let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
            return Err(FhirError::invalid("_include and _revinclude take Type:parameter[:TargetType]"));
        };
        let target = parts.next().map(str::to_string);
        let known = |t: &str| fhir::is_resource_type(t);
        if !known(source) || target.as_deref().is_some_and(|t| !known(t)) || parts.next().is_some() || param.is_empty()
        {
            return Err(FhirError::invalid(format!("{value}: not Type:parameter[:TargetType] of R4 types")));
        }
        Ok(Spec { source: source.to_string(), param: param.to_string(), target })
    }
}

/// The (type, id) of every reference `resource` holds under search parameter `param`: the
/// element of that name (kebab-case to camelCase), or its `…Reference` choice; `patient` is
/// also the `subject` element, as R4 defines it on clinical types.
pub fn references(resource: &Map<String, Value>, param: &str) -> Vec<(String, String)> {
    let mut camel = String::with_capacity(param.len());
    let mut upper = false;
    for c in param.chars() {
        match c {
            '-' => upper = true,
            c if upper => {
                camel.extend(c.to_uppercase());
                upper = false;
            }
            c => camel.push(c),
        }
    }
    let mut elements = vec![camel.clone(), format!("{camel}Reference")];
    if param == "patient" {
        elements.push("subject".into());
    }
    let mut out = Vec::new();
    for element in elements {
        if let Some(value) = resource.get(&element) {
            collect(value, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn collect(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("reference")
                && let Some((kind, id)) = fhir::reference_target(reference)
            {
                out.push((kind.to_string(), id.to_string()));
            }
            map.values().for_each(|v| collect(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// The resources `page` references under `includes` and those referencing it under
/// `revincludes` (whose target type is `kind`), not in `page` already, at most [`INCLUDED_MAX`].
pub async fn included(
    gateway: &Gateway,
    kind: &str,
    page: &[Stored],
    includes: &[Spec],
    revincludes: &[Spec],
) -> FhirResult<Vec<Stored>> {
    let mut seen: HashSet<(String, String)> =
        page.iter().map(|s| (s.resource_type().to_string(), s.id().to_string())).collect();
    let mut out = Vec::new();
    for spec in includes.iter().filter(|s| s.source == kind) {
        for stored in page {
            for (target, id) in references(&stored.resource, &spec.param) {
                if out.len() >= INCLUDED_MAX {
                    return Ok(out);
                }
                if spec.target.as_deref().is_some_and(|t| t != target) || !seen.insert((target.clone(), id.clone())) {
                    continue;
                }
                match gateway.read(&target, &id).await {
                    Ok(found) => out.push(found),
                    // Not readable by this member, gone or deleted: not included.
                    Err(e) if matches!(e.status, 403 | 404 | 410) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let targets: HashSet<(String, String)> =
        page.iter().map(|s| (s.resource_type().to_string(), s.id().to_string())).collect();
    for spec in revincludes.iter().filter(|s| s.target.as_deref().is_none_or(|t| t == kind)) {
        if page.is_empty() {
            break;
        }
        // The source type's resources the member may read; for a patient's own compartment,
        // only the charts of the page's patients.
        let patients: Vec<Option<medledger_types::MemberId>> =
            if kind == "Patient" && matches!(spec.param.as_str(), "patient" | "subject") {
                page.iter().filter_map(|s| s.id().parse().ok()).map(Some).collect()
            } else {
                vec![None]
            };
        for patient in patients {
            // Which resources refer to the page is looked up in the index's local copies; only
            // those are read (audited), not every resource of the source type.
            let search = Search { resource_type: Some(spec.source.clone()), patient, ..Search::default() };
            let found = gateway.find(&search, &[], None, 0).await?;
            let referring: Vec<_> = found
                .hits
                .into_iter()
                .filter(|hit| !seen.contains(&(hit.resource_type.to_string(), hit.id().to_string())))
                .filter(|hit| {
                    gateway
                        .local_resource(hit)
                        .is_none_or(|r| references(&r, &spec.param).iter().any(|t| targets.contains(t)))
                })
                .take(INCLUDED_MAX.saturating_sub(out.len()))
                .collect();
            for candidate in gateway.read_hits(&referring, &found.just_read).await? {
                if out.len() >= INCLUDED_MAX {
                    return Ok(out);
                }
                let refers = references(&candidate.resource, &spec.param).iter().any(|r| targets.contains(r));
                let key = (candidate.resource_type().to_string(), candidate.id().to_string());
                if refers && seen.insert(key) {
                    out.push(candidate);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_and_references() {
        assert_eq!(
            Spec::parse("MedicationRequest:medication:Medication").unwrap(),
            Spec { source: "MedicationRequest".into(), param: "medication".into(), target: Some("Medication".into()) }
        );
        assert!(Spec::parse("Observation").is_err());
        assert!(Spec::parse("Nope:patient").is_err());
        assert!(Spec::parse("Observation:patient:Nope").is_err());
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "http://x.org/fhir/Practitioner/d1"}, {"reference": "#c"}]});
        let obs = obs.as_object().unwrap();
        assert_eq!(references(obs, "patient"), vec![("Patient".into(), "p1".into())]);
        assert_eq!(references(obs, "performer"), vec![("Practitioner".into(), "d1".into())]);
        let patient = json!({"generalPractitioner": [{"reference": "Practitioner/d2"}]});
        assert_eq!(
            references(patient.as_object().unwrap(), "general-practitioner"),
            vec![("Practitioner".into(), "d2".into())]
        );
        let request = json!({"medicationReference": {"reference": "Medication/m1"}});
        assert_eq!(references(request.as_object().unwrap(), "medication"), vec![("Medication".into(), "m1".into())]);
    }
}
