//! FHIR search parameters the gateway applies to decrypted resources (FHIR R4 §3.1.1 "Search"):
//! which parameters each type has, what each one matches (token, string, date), `_sort` keys.
//!
//! Searches run on this machine over the gateway's index of what the member may read: each
//! resource's searchable values are extracted once ([`Terms`]) when it enters the index, and a
//! search filters, sorts and counts those (only the page it returns is read again, audited).
//! Nothing here reaches the ledger, so no identifier, name or code leaves in the clear.
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
    Definition { name: "code", kind: Kind::Token, paths: &["code"] },
    Definition { name: "status", kind: Kind::Token, paths: &["status", "clinicalStatus"] },
    Definition { name: "category", kind: Kind::Token, paths: &["category"] },
    Definition { name: "date", kind: Kind::Date, paths: DATE_PATHS },
    Definition { name: "identifier", kind: Kind::Token, paths: &["identifier"] },
];

/// `_lastUpdated` is the ledger's time of the version (see [`Terms::of`]), not a path.
const COMMON: &[Definition] = &[Definition { name: "_lastUpdated", kind: Kind::Date, paths: &[] }];

/// Parameters the search handler reads itself (patient, ids, paging, sorting, summary).
pub const HANDLED: &[&str] =
    &["patient", "subject", "_id", "_sort", "_summary", "_count", "_offset", "_include", "_revinclude"];

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

/// One searchable value of a resource.
#[derive(Debug)]
enum Term {
    /// A code, a Coding, a CodeableConcept's codings or an Identifier: its system (none for a
    /// plain code) and its code or value.
    Token {
        system: Option<Box<str>>,
        code: Box<str>,
    },
    /// A string, as written and lower-cased.
    Text {
        raw: Box<str>,
        folded: Box<str>,
    },
    Date(Box<str>),
}

/// The values a resource's search parameters and sort keys look at, extracted once when the
/// resource enters the gateway's index (a few hundred bytes, where the parsed resource would
/// take kilobytes).
#[derive(Debug, Default)]
pub struct Terms {
    /// Per parameter of the type that has values: its name and the values.
    params: Vec<(&'static str, Vec<Term>)>,
    id: Box<str>,
    last_updated: Box<str>,
    /// The clinical date (first of [`DATE_PATHS`]), the lower-cased family name, the birth date.
    date: Box<str>,
    family: Box<str>,
    birthdate: Box<str>,
}

impl Terms {
    /// The terms of `resource` (of its own type), known by `id`, last updated at `last_updated`
    /// (RFC 3339: the ledger's time of the version).
    pub fn of(resource: &Map<String, Value>, id: &str, last_updated: &str) -> Terms {
        let kind = crate::fhir::resource_type(resource);
        let mut params = Vec::new();
        for definition in definitions(kind) {
            let mut found = Vec::new();
            for path in definition.paths {
                collect_in(resource, path, &mut found);
            }
            let mut terms = Vec::new();
            for value in found {
                match definition.kind {
                    Kind::Token => tokens(value, &mut terms),
                    Kind::String => {
                        if let Some(text) = value.as_str() {
                            terms.push(Term::Text { raw: text.into(), folded: fold(text).into() });
                        }
                    }
                    Kind::Date => {
                        if let Some(text) = value.as_str() {
                            terms.push(Term::Date(text.into()));
                        }
                    }
                }
            }
            if !terms.is_empty() {
                params.push((definition.name, terms));
            }
        }
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
        Terms {
            params,
            id: id.into(),
            last_updated: last_updated.into(),
            date: first(DATE_PATHS).into(),
            family: fold(&first(&["name.family"])).into(),
            birthdate: first(&["birthDate"]).into(),
        }
    }

    /// The resource's FHIR id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn values(&self, name: &str) -> &[Term] {
        self.params.iter().find(|(n, _)| *n == name).map_or(&[], |(_, terms)| terms)
    }
}

/// The tokens of a value: a code, a Coding, a CodeableConcept (each coding) or an Identifier.
fn tokens(value: &Value, out: &mut Vec<Term>) {
    match value {
        Value::String(code) => out.push(Term::Token { system: None, code: code.as_str().into() }),
        Value::Object(map) => {
            let get = |k: &str| map.get(k).and_then(Value::as_str);
            if let Some(codings) = map.get("coding").and_then(Value::as_array) {
                codings.iter().for_each(|c| tokens(c, out));
            } else {
                let code = if map.contains_key("value") { get("value") } else { get("code") };
                out.push(Term::Token {
                    system: Some(get("system").unwrap_or_default().into()),
                    code: code.unwrap_or_default().into(),
                });
            }
        }
        _ => {}
    }
}

impl Filter {
    /// Whether a resource with these terms matches: any value, at any of the parameter's paths.
    pub fn matches(&self, terms: &Terms) -> bool {
        if self.definition.name == "_lastUpdated" {
            return self.values.iter().any(|wanted| date_matches(&terms.last_updated, wanted));
        }
        let found = terms.values(self.definition.name);
        self.values.iter().any(|wanted| found.iter().any(|term| self.one(term, wanted)))
    }

    fn one(&self, term: &Term, wanted: &str) -> bool {
        match term {
            Term::Token { system, code } => token_matches(system.as_deref(), code, wanted),
            Term::Text { raw, folded } => match self.modifier.as_deref() {
                Some("exact") => **raw == *wanted,
                Some("contains") => folded.contains(&fold(wanted)),
                _ => folded.starts_with(&fold(wanted)),
            },
            Term::Date(date) => date_matches(date, wanted),
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

/// A token `system|code`, `code`, `|code` or `system|` against a value's system (none for a
/// plain code) and code.
fn token_matches(system: Option<&str>, code: &str, wanted: &str) -> bool {
    match wanted.split_once('|') {
        Some((want_system, want_code)) => {
            system.unwrap_or_default() == want_system && (want_code.is_empty() || code == want_code)
        }
        None => code == wanted,
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
    /// The sort key of a resource with these terms (missing values sort first).
    pub fn key_of<'a>(&self, terms: &'a Terms) -> &'a str {
        match self.key {
            SortKey::Date => &terms.date,
            SortKey::LastUpdated => &terms.last_updated,
            SortKey::Id => &terms.id,
            SortKey::Family => &terms.family,
            SortKey::Birthdate => &terms.birthdate,
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

    fn terms(resource: &Value) -> Terms {
        let r = object(resource.clone());
        Terms::of(&r, r.get("id").and_then(Value::as_str).unwrap_or_default(), "2026-01-02T03:04:05.000Z")
    }

    fn hit(kind: &str, name: &str, value: &str, resource: &Value) -> bool {
        filter(kind, name, value).unwrap().unwrap().matches(&terms(resource))
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
        assert!(hit("Observation", "_lastUpdated", "ge2026-01", &o), "the ledger's time, not meta");
        assert!(!hit("Observation", "_lastUpdated", "lt2026", &o));
        let coded = json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}], "text": "HbA1c"}});
        assert!(hit("Observation", "code", "http://loinc.org|4548-4", &coded));
        assert!(hit("Observation", "code", "4548-4", &coded));
        assert!(hit("Observation", "code", "http://loinc.org|", &coded));
        assert!(!hit("Observation", "code", "http://snomed.info/sct|4548-4", &coded));
        assert!(!hit("Observation", "code", "|4548-4", &coded), "|code wants no system");
        assert!(!hit("Observation", "code", "HbA1c", &coded), "text is not a code");
        let c = json!({"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2019"});
        assert!(hit("Condition", "status", "active", &c));
        assert!(hit("Condition", "date", "2019", &c));
        assert!(filter("Observation", "family", "x").unwrap().is_none(), "a Patient parameter");
    }

    #[test]
    fn sorting() {
        let a = object(json!({"resourceType": "Observation", "effectiveDateTime": "2020-01-01"}));
        let b = object(json!({"resourceType": "Observation", "issued": "2021-01-01T00:00:00Z"}));
        let (a, b) = (Terms::of(&a, "a", "2026-01-02"), Terms::of(&b, "b", "2026-01-01"));
        let s = sort("Observation", "date").unwrap();
        assert!(s.key_of(&a) < s.key_of(&b));
        let s = sort("Observation", "-_lastUpdated").unwrap();
        assert!(s.descending() && s.key_of(&a) > s.key_of(&b));
        assert!(sort("Observation", "_id").unwrap().key_of(&a) < sort("Observation", "_id").unwrap().key_of(&b));
        assert!(sort("Observation", "family").is_err());
        assert!(sort("Patient", "family").is_ok());
    }
}
