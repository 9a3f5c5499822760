//! FHIR search parameters the gateway applies to decrypted resources (FHIR R4 §3.1.1 "Search"):
//! which parameters each type has, what each one matches (token, string, date), `_sort` keys.
//!
//! Searches run on this machine over what the member may read (every candidate is an audited
//! read first): nothing here reaches the ledger, so no identifier, name or code leaves in the clear.
//!
//! Dates compare at the precision the parameter gives (`2020`, `2020-05`, `2020-05-01`,
//! `2020-05-01T10:00:00`), with the prefixes `eq`, `ne`, `lt`, `gt`, `le`, `ge`; time zones are
//! not normalised (values compare as written).

use serde_json::{Map, Value};

use crate::fhir::FhirError;

/// What kind of value a parameter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Token,
    String,
    Date,
}

/// Where a parameter's values are in a resource (dotted paths; arrays are walked).
struct Definition {
    name: &'static str,
    kind: Kind,
    paths: &'static [&'static str],
}

/// The clinical date of a resource, whichever element its type uses.
const DATE_PATHS: &[&str] = &[
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod.start",
    "issued",
    "onsetDateTime",
    "onsetPeriod.start",
    "recordedDate",
    "authoredOn",
    "occurrenceDateTime",
    "performedDateTime",
    "performedPeriod.start",
    "period.start",
    "date",
];

const PATIENT: &[Definition] = &[
    Definition { name: "identifier", kind: Kind::Token, paths: &["identifier"] },
    Definition {
        name: "name",
        kind: Kind::String,
        paths: &["name.family", "name.given", "name.text", "name.prefix", "name.suffix"],
    },
    Definition { name: "family", kind: Kind::String, paths: &["name.family"] },
    Definition { name: "given", kind: Kind::String, paths: &["name.given"] },
    Definition { name: "birthdate", kind: Kind::Date, paths: &["birthDate"] },
    Definition { name: "gender", kind: Kind::Token, paths: &["gender"] },
];

const CLINICAL: &[Definition] = &[
    Definition { name: "status", kind: Kind::Token, paths: &["status", "clinicalStatus"] },
    Definition { name: "category", kind: Kind::Token, paths: &["category"] },
    Definition { name: "date", kind: Kind::Date, paths: DATE_PATHS },
    Definition { name: "identifier", kind: Kind::Token, paths: &["identifier"] },
];

const COMMON: &[Definition] = &[Definition { name: "_lastUpdated", kind: Kind::Date, paths: &["meta.lastUpdated"] }];

/// Parameters the search handler reads itself (patient, ids, codes, paging, sorting, summary).
pub const HANDLED: &[&str] =
    &["patient", "subject", "_id", "code", "_sort", "_summary", "_count", "_offset", "_include", "_revinclude"];

fn definitions(resource_type: &str) -> impl Iterator<Item = &'static Definition> {
    let own = if resource_type == "Patient" { PATIENT } else { CLINICAL };
    own.iter().chain(COMMON)
}

/// The names of the parameters a type's search takes, handled ones included.
pub fn supported(resource_type: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = HANDLED.to_vec();
    names.extend(definitions(resource_type).map(|d| d.name));
    names.sort_unstable();
    names.dedup();
    names
}

/// The CapabilityStatement's `searchParam` list of a type.
pub fn capability(resource_type: &str) -> Vec<Value> {
    let mut out = vec![
        serde_json::json!({"name": "_id", "type": "token"}),
        serde_json::json!({"name": "_count", "type": "number"}),
    ];
    if resource_type != "Patient" {
        out.push(serde_json::json!({"name": "patient", "type": "reference"}));
        out.push(serde_json::json!({"name": "subject", "type": "reference"}));
        out.push(serde_json::json!({"name": "code", "type": "token"}));
    }
    for d in definitions(resource_type) {
        let kind = match d.kind {
            Kind::Token => "token",
            Kind::String => "string",
            Kind::Date => "date",
        };
        out.push(serde_json::json!({"name": d.name, "type": kind}));
    }
    out
}

/// One parsed filter: a parameter (with its modifier) and its values (any one may match).
pub struct Filter {
    definition: &'static Definition,
    modifier: Option<String>,
    values: Vec<String>,
}

/// The filter `name[:modifier]=values` for `resource_type`; `None` when the type has no such
/// parameter (the caller ignores it, or refuses it under `Prefer: handling=strict`).
pub fn filter(resource_type: &str, name: &str, values: &str) -> Result<Option<Filter>, FhirError> {
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m.to_string())),
        None => (name, None),
    };
    let Some(definition) = definitions(resource_type).find(|d| d.name == base) else { return Ok(None) };
    let allowed = match definition.kind {
        Kind::String => matches!(modifier.as_deref(), None | Some("exact") | Some("contains")),
        Kind::Token | Kind::Date => modifier.is_none(),
    };
    if !allowed {
        return Err(FhirError::invalid(format!("{name}: the modifier is not supported")));
    }
    let values: Vec<String> = values.split(',').map(str::to_string).filter(|v| !v.is_empty()).collect();
    if definition.kind == Kind::Date {
        for v in &values {
            date_comparison(v)?;
        }
    }
    Ok(Some(Filter { definition, modifier, values }))
}

impl Filter {
    /// Whether `resource` matches: any value, at any of the parameter's paths.
    pub fn matches(&self, resource: &Map<String, Value>) -> bool {
        let mut found = Vec::new();
        for path in self.definition.paths {
            collect_in(resource, path, &mut found);
        }
        self.values.iter().any(|wanted| found.iter().any(|value| self.one(value, wanted)))
    }

    fn one(&self, value: &Value, wanted: &str) -> bool {
        match self.definition.kind {
            Kind::Token => token_matches(value, wanted),
            Kind::String => {
                let Some(text) = value.as_str() else { return false };
                match self.modifier.as_deref() {
                    Some("exact") => text == wanted,
                    Some("contains") => fold(text).contains(&fold(wanted)),
                    _ => fold(text).starts_with(&fold(wanted)),
                }
            }
            Kind::Date => value.as_str().is_some_and(|text| date_matches(text, wanted)),
        }
    }
}

/// Every value at `path` (dotted; arrays walked at each step).
fn collect<'a>(value: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, out)),
        Value::Object(map) => collect_in(map, path, out),
        _ => {}
    }
}

/// [`collect`] from an object.
fn collect_in<'a>(map: &'a Map<String, Value>, path: &str, out: &mut Vec<&'a Value>) {
    match path.split_once('.') {
        Some((head, rest)) => {
            if let Some(next) = map.get(head) {
                collect(next, rest, out);
            }
        }
        None => match map.get(path) {
            Some(Value::Array(items)) => out.extend(items.iter()),
            Some(v) => out.push(v),
            None => {}
        },
    }
}

/// Case- and accent-insensitive enough for names: lower case.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// A token `system|code`, `code` or `system|` against a code, a Coding, a CodeableConcept or an
/// Identifier (`system|value`).
fn token_matches(value: &Value, wanted: &str) -> bool {
    let (system, code) = match wanted.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, wanted),
    };
    let pair = |sys: Option<&str>, val: Option<&str>| {
        system.is_none_or(|s| sys.unwrap_or_default() == s) && (code.is_empty() || val == Some(code))
    };
    match value {
        Value::String(s) => system.is_none_or(str::is_empty) && s == code,
        Value::Object(map) => {
            let get = |k: &str| map.get(k).and_then(Value::as_str);
            if let Some(codings) = map.get("coding").and_then(Value::as_array) {
                return codings.iter().any(|c| token_matches(c, wanted));
            }
            if map.contains_key("value") {
                return pair(get("system"), get("value"));
            }
            pair(get("system"), get("code"))
        }
        _ => false,
    }
}

/// A date parameter value: its prefix and the date itself.
fn date_comparison(value: &str) -> Result<(&str, &str), FhirError> {
    let (prefix, date) = match value.get(..2) {
        Some(p @ ("eq" | "ne" | "lt" | "gt" | "le" | "ge")) => (p, &value[2..]),
        Some("sa" | "eb" | "ap") => {
            return Err(FhirError::invalid(format!("{value}: the prefixes sa, eb and ap are not supported")));
        }
        _ => ("eq", value),
    };
    let shape_ok = date.len() >= 4
        && date.bytes().take(4).all(|b| b.is_ascii_digit())
        && date.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'T' | b':' | b'.' | b'Z' | b'+'));
    if !shape_ok {
        return Err(FhirError::invalid(format!("{value}: not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)")));
    }
    Ok((prefix, date))
}

/// `value` (a resource's date) against `wanted` (a parameter value), at the parameter's precision.
fn date_matches(value: &str, wanted: &str) -> bool {
    let Ok((prefix, date)) = date_comparison(wanted) else { return false };
    // Compared as written, to the precision of the parameter (and at most to the second).
    let precision = date.len().min(19);
    let date = &date[..precision];
    let Some(value) = value.get(..precision.min(value.len())) else { return false };
    match prefix {
        "ne" => value != date,
        "lt" => value < date,
        "gt" => value > date,
        "le" => value <= date,
        "ge" => value >= date,
        _ => value == date,
    }
}

/// A `_sort` key: the parameter and whether descending.
pub struct Sort {
    key: SortKey,
    descending: bool,
}

enum SortKey {
    Date,
    LastUpdated,
    Id,
    Family,
    Birthdate,
}

/// Parses `_sort` (one key: `date`, `_lastUpdated`, `_id`, and for Patient `family`, `birthdate`;
/// `-` for descending).
pub fn sort(resource_type: &str, value: &str) -> Result<Sort, FhirError> {
    let (descending, name) = match value.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, value),
    };
    let key = match (name, resource_type == "Patient") {
        ("_lastUpdated", _) => SortKey::LastUpdated,
        ("_id", _) => SortKey::Id,
        ("date", false) => SortKey::Date,
        ("family", true) => SortKey::Family,
        ("birthdate", true) => SortKey::Birthdate,
        _ => return Err(FhirError::invalid(format!("_sort={value} is not supported for {resource_type}"))),
    };
    Ok(Sort { key, descending })
}

impl Sort {
    /// The sort key of `resource` (missing values sort first).
    pub fn key_of(&self, resource: &Map<String, Value>) -> String {
        let first = |paths: &[&str]| {
            let mut found = Vec::new();
            for path in paths {
                collect_in(resource, path, &mut found);
                if !found.is_empty() {
                    break;
                }
            }
            found.first().and_then(|v| v.as_str()).unwrap_or_default().to_string()
        };
        match self.key {
            SortKey::Date => first(DATE_PATHS),
            SortKey::LastUpdated => first(&["meta.lastUpdated"]),
            SortKey::Id => first(&["id"]),
            SortKey::Family => fold(&first(&["name.family"])),
            SortKey::Birthdate => first(&["birthDate"]),
        }
    }

    pub fn descending(&self) -> bool {
        self.descending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn hit(kind: &str, name: &str, value: &str, resource: &Value) -> bool {
        filter(kind, name, value).unwrap().unwrap().matches(&object(resource.clone()))
    }

    #[test]
    fn patient_parameters() {
        let p = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "123"}],
            "name": [{"family": "Müller", "given": ["Anna", "Lena"]}], "birthDate": "1980-02-01", "gender": "female"});
        assert!(hit("Patient", "identifier", "urn:mrn|123", &p));
        assert!(hit("Patient", "identifier", "123", &p));
        assert!(!hit("Patient", "identifier", "urn:other|123", &p));
        assert!(!hit("Patient", "identifier", "urn:mrn|12", &p));
        assert!(hit("Patient", "family", "mül", &p), "starts with, case-insensitive");
        assert!(!hit("Patient", "family:exact", "müller", &p));
        assert!(hit("Patient", "family:exact", "Müller", &p));
        assert!(hit("Patient", "given", "lena", &p));
        assert!(hit("Patient", "name", "ann", &p));
        assert!(hit("Patient", "name:contains", "ülle", &p));
        assert!(!hit("Patient", "name", "bob,carl", &p));
        assert!(hit("Patient", "name", "bob,anna", &p), "a comma is OR");
        assert!(hit("Patient", "gender", "female", &p));
        assert!(!hit("Patient", "gender", "male", &p));
        assert!(hit("Patient", "birthdate", "1980", &p));
        assert!(hit("Patient", "birthdate", "1980-02", &p));
        assert!(hit("Patient", "birthdate", "ge1980-01-15", &p));
        assert!(!hit("Patient", "birthdate", "lt1980-02-01", &p));
        assert!(hit("Patient", "birthdate", "le1980-02-01", &p));
        assert!(hit("Patient", "birthdate", "ne1981", &p));
        assert!(filter("Patient", "unknown", "x").unwrap().is_none());
        assert!(filter("Patient", "gender:exact", "x").is_err());
        assert!(filter("Patient", "birthdate", "sa1980").is_err());
        assert!(filter("Patient", "birthdate", "yesterday").is_err());
    }

    #[test]
    fn clinical_parameters() {
        let o = json!({"resourceType": "Observation", "status": "final", "effectiveDateTime": "2021-03-04T10:00:00Z",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]});
        assert!(hit("Observation", "status", "final", &o));
        assert!(!hit("Observation", "status", "amended", &o));
        assert!(hit("Observation", "category", "laboratory", &o));
        assert!(hit(
            "Observation",
            "category",
            "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            &o
        ));
        assert!(hit("Observation", "date", "2021-03", &o));
        assert!(hit("Observation", "date", "gt2021-03-03", &o));
        assert!(!hit("Observation", "date", "lt2021", &o));
        assert!(hit("Observation", "date", "ge2021-03-04T09:00:00", &o));
        let c = json!({"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2019"});
        assert!(hit("Condition", "status", "active", &c));
        assert!(hit("Condition", "date", "2019", &c));
        assert!(filter("Observation", "family", "x").unwrap().is_none(), "a Patient parameter");
    }

    #[test]
    fn sorting() {
        let a = object(json!({"id": "a", "effectiveDateTime": "2020-01-01", "meta": {"lastUpdated": "2026-01-02"}}));
        let b = object(json!({"id": "b", "issued": "2021-01-01T00:00:00Z", "meta": {"lastUpdated": "2026-01-01"}}));
        let s = sort("Observation", "date").unwrap();
        assert!(s.key_of(&a) < s.key_of(&b));
        let s = sort("Observation", "-_lastUpdated").unwrap();
        assert!(s.descending() && s.key_of(&a) > s.key_of(&b));
        assert!(sort("Observation", "family").is_err());
        assert!(sort("Patient", "family").is_ok());
    }
}
