//! FHIR R4 vocabulary of the gateway: resource validation, OperationOutcome, the
//! CapabilityStatement, references and the patient a resource belongs to. Pure functions; no I/O.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// FHIR version this gateway speaks.
pub const FHIR_VERSION: &str = "4.0.1";
/// Media type of every response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
/// Largest resource or Bundle accepted in one request.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most entries of a transaction Bundle.
pub const BUNDLE_ENTRIES_MAX: usize = 1000;
/// Default and largest page of a search.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

/// Resource types stored as records (every R4 type but Bundle, OperationOutcome, Parameters and
/// CapabilityStatement, which are messages rather than data).
pub const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "Organization",
    "OrganizationAffiliation",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// A FHIR error: an HTTP status and the OperationOutcome that explains it. Diagnostics never
/// carry resource content (they may name element paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirError {
    pub status: u16,
    /// IssueType code (`invalid`, `not-found`, `forbidden`, ...).
    pub code: &'static str,
    pub diagnostics: String,
    /// Element-level problems: (FHIRPath expression, message).
    pub issues: Vec<(String, String)>,
}

impl FhirError {
    pub fn new(status: u16, code: &'static str, diagnostics: impl Into<String>) -> Self {
        FhirError { status, code, diagnostics: diagnostics.into(), issues: Vec::new() }
    }
    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(400, "invalid", diagnostics)
    }
    pub fn unprocessable(diagnostics: impl Into<String>) -> Self {
        Self::new(422, "processing", diagnostics)
    }
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(404, "not-found", diagnostics)
    }
    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(403, "forbidden", diagnostics)
    }
    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::new(405, "not-supported", diagnostics)
    }

    /// The OperationOutcome resource.
    pub fn outcome(&self) -> Value {
        let mut issues = vec![json!({"severity": "error", "code": self.code, "diagnostics": self.diagnostics})];
        for (path, message) in &self.issues {
            issues.push(json!({"severity": "error", "code": "invalid", "diagnostics": message, "expression": [path]}));
        }
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

impl From<medledger_sdk::SdkError> for FhirError {
    fn from(e: medledger_sdk::SdkError) -> Self {
        use medledger_sdk::SdkError;
        match e {
            SdkError::NotFound(m) => FhirError::not_found(m),
            SdkError::Denied(m) => FhirError::forbidden(format!("access denied: {m}")),
            SdkError::Conflict(m) => FhirError::new(409, "conflict", m),
            // Tampering detected by the gateway: nothing unauthenticated is returned.
            SdkError::Integrity(m) => FhirError::new(502, "exception", format!("integrity failure: {m}")),
            SdkError::Usage(m) => FhirError::unprocessable(m),
            SdkError::Other(m) => FhirError::new(503, "transient", m),
            _ => FhirError::new(500, "exception", "unexpected error"),
        }
    }
}

/// A FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub fn is_resource_type(s: &str) -> bool {
    RESOURCE_TYPES.contains(&s)
}

/// Most JSON elements (objects, arrays, members and array items) in one request body or one
/// imported resource. A parsed element costs far more memory than its bytes (a 15 MB Observation
/// of 400 000 components took 1.5 GB to parse), so the count, not only the size, is bounded, and
/// counted before anything is parsed.
pub const ELEMENTS_MAX: usize = 200_000;
/// Deepest nesting of objects and arrays.
pub const DEPTH_MAX: usize = 100;

/// Counts the JSON elements and the nesting of `text` without parsing it (no allocation), and
/// refuses it past [`ELEMENTS_MAX`] (413) or [`DEPTH_MAX`] (400). Malformed JSON is left to the parser.
pub fn check_shape(text: &[u8]) -> Result<(), FhirError> {
    let (mut elements, mut depth, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                elements += 1;
                depth += 1;
                if depth > DEPTH_MAX {
                    return Err(FhirError::invalid(format!(
                        "the JSON is nested too deeply (at most {DEPTH_MAX} levels)"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' | b',' => elements += 1,
            _ => {}
        }
        if elements > ELEMENTS_MAX {
            return Err(FhirError::new(
                413,
                "too-costly",
                format!(
                    "the resource has more than {ELEMENTS_MAX} JSON elements; split it (a Bundle into smaller ones)"
                ),
            ));
        }
    }
    Ok(())
}

/// Parses a request body as one R4 resource, strictly (fhirkit): every error-level problem is
/// reported with its path; nothing is accepted half-valid.
pub fn parse_resource(bytes: &[u8]) -> Result<Map<String, Value>, FhirError> {
    if bytes.len() > BODY_BYTES_MAX {
        return Err(FhirError::new(413, "too-costly", format!("bodies are limited to {} MiB", BODY_BYTES_MAX >> 20)));
    }
    check_shape(bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|_| FhirError::invalid("the body is not UTF-8"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            FhirError::invalid(format!("the JSON is nested too deeply (at most {DEPTH_MAX} levels)"))
        } else {
            FhirError::invalid(format!("the body is not JSON (line {})", e.line()))
        }
    })?;
    let Value::Object(map) = value else {
        return Err(FhirError::invalid("the body is not a JSON object"));
    };
    if !map.get("resourceType").is_some_and(Value::is_string) {
        return Err(FhirError::invalid("the body has no resourceType"));
    }
    validate(text)?;
    Ok(map)
}

/// Checks a resource's JSON text against R4 (fhirkit, strict).
pub fn validate(text: &str) -> Result<(), FhirError> {
    check_shape(text.as_bytes())?;
    match fhirkit::from_json::<fhirkit::r4::Resource>(text) {
        Err(_) => Err(FhirError::invalid("the body is not JSON")),
        Ok((resource, issues)) => {
            let errors: Vec<(String, String)> = issues
                .into_iter()
                .filter(|i| i.severity == fhirkit::Severity::Error)
                .take(100)
                .map(|i| (i.path, i.message))
                .collect();
            if resource.is_none() || !errors.is_empty() {
                let mut e =
                    FhirError::unprocessable(format!("not a valid FHIR R4 resource ({} problem(s))", errors.len()));
                e.issues = errors;
                return Err(e);
            }
            Ok(())
        }
    }
}

pub fn resource_type(resource: &Map<String, Value>) -> &str {
    resource.get("resourceType").and_then(Value::as_str).unwrap_or_default()
}

/// The `Type/id` a reference names, from a relative, absolute (`http.../Type/id`) or versioned
/// (`Type/id/_history/n`) reference; `None` for contained (`#x`) and `urn:` references.
pub fn reference_target(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split('?').next().unwrap_or_default();
    let path = match path.find("/_history/") {
        Some(at) => &path[..at],
        None => path,
    };
    let mut segments = path.rsplit('/');
    let id = segments.next()?;
    let kind = segments.next()?;
    (is_resource_type(kind) && is_id(id)).then_some((kind, id))
}

/// Elements that link a resource to its patient (the R4 patient compartment's main links).
const PATIENT_LINKS: &[&str] = &["subject", "patient", "beneficiary", "individual"];

/// The reference (as written) that names the patient this resource is about, if any.
pub fn patient_reference(resource: &Map<String, Value>) -> Option<String> {
    let is_patient_ref = |r: &str| r.starts_with("urn:") || reference_target(r).is_some_and(|(t, _)| t == "Patient");
    for link in PATIENT_LINKS {
        if let Some(r) = resource.get(*link).and_then(|v| v.get("reference")).and_then(Value::as_str)
            && is_patient_ref(r)
        {
            return Some(r.to_string());
        }
    }
    // Appointment-like resources: participant[].actor.
    resource.get("participant").and_then(Value::as_array).into_iter().flatten().find_map(|p| {
        let r = p.get("actor")?.get("reference")?.as_str()?;
        reference_target(r).is_some_and(|(t, _)| t == "Patient").then(|| r.to_string())
    })
}

/// Replaces every `reference` in `value` found in `map` (e.g. a Bundle's `urn:uuid:` fullUrls or
/// a source system's `Patient/123`) with its new `Type/id`. Returns how many were replaced.
pub fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) -> usize {
    let mut n = 0;
    match value {
        Value::Object(obj) => {
            for (key, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if key == "reference" => {
                        if let Some(new) = map.get(s.as_str()) {
                            *s = new.clone();
                            n += 1;
                        }
                    }
                    _ => n += rewrite_references(v, map),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                n += rewrite_references(v, map);
            }
        }
        _ => {}
    }
    n
}

/// The server's CapabilityStatement (`GET /metadata`).
pub fn capability_statement(base: &str, date: &str) -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            // Every version the ledger keeps is readable (vread, history); delete marks the
            // resource entered in error in a new version (reads then answer 410).
            let mut interactions = vec![json!({"code": "read"}), json!({"code": "vread"}), json!({"code": "history-instance"}), json!({"code": "create"}), json!({"code": "update"}), json!({"code": "search-type"})];
            if *t != "Patient" {
                interactions.push(json!({"code": "delete"}));
            }
            let mut r = json!({
                "type": t,
                "interaction": interactions,
                "versioning": "versioned-update",
                "conditionalDelete": "not-supported",
                "readHistory": true,
                "updateCreate": false,
                "conditionalCreate": true,
                "conditionalUpdate": true,
                "searchParam": crate::params::capability(t)
            });
            if *t == "Patient" {
                r["operation"] = json!([
                    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}
                ]);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "medledger gateway", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "End-to-end-encrypted FHIR R4 gateway: resources are validated, encrypted and registered on the medledger network on this machine; every read is audited on the ledger first.", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "A resource that names a patient (subject or patient) is a record of that patient's chart; one that names none (Practitioner, Organization, Location, Medication...) is a record of the writer's organisation's directory, read by its staff. A Bundle is not stored as one resource: send it as a transaction to the base URL. Searches take _include and _revinclude as Type:parameter[:TargetType], the parameter naming the reference element (patient also naming subject), at most 100 included resources.",
            "resource": resources,
            "interaction": [{"code": "transaction"}]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_counted_before_parsing() {
        assert!(check_shape(br#"{"a":[1,2,{"b":"}}}]]],,,::"}]}"#).is_ok(), "brackets in strings do not count");
        assert!(check_shape(br#"{"a":"\"[[[[","b":1}"#).is_ok(), "an escaped quote does not end the string");
        let deep = format!("{}{}", "[".repeat(DEPTH_MAX + 1), "]".repeat(DEPTH_MAX + 1));
        assert_eq!(check_shape(deep.as_bytes()).unwrap_err().status, 400);
        let fine = format!("{}{}", "[".repeat(DEPTH_MAX), "]".repeat(DEPTH_MAX));
        assert!(check_shape(fine.as_bytes()).is_ok());
        let many = format!("[{}0]", "0,".repeat(ELEMENTS_MAX));
        assert_eq!(check_shape(many.as_bytes()).unwrap_err().status, 413);
        let most = format!("[{}0]", "0,".repeat(ELEMENTS_MAX - 1));
        assert!(check_shape(most.as_bytes()).is_ok());
    }

    #[test]
    fn references_resolve_in_every_written_form() {
        assert_eq!(reference_target("Patient/abc"), Some(("Patient", "abc")));
        assert_eq!(reference_target("http://x.org/fhir/Patient/abc"), Some(("Patient", "abc")));
        assert_eq!(reference_target("Patient/abc/_history/2"), Some(("Patient", "abc")));
        assert_eq!(reference_target("#contained"), None);
        assert_eq!(reference_target("urn:uuid:1234"), None);
        assert_eq!(reference_target("Nope/abc"), None);
        assert_eq!(reference_target("Patient/a b"), None);
    }

    #[test]
    fn the_patient_link_is_found() {
        let r = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(patient_reference(&r(json!({"subject": {"reference": "Patient/p1"}}))), Some("Patient/p1".into()));
        assert_eq!(patient_reference(&r(json!({"patient": {"reference": "urn:uuid:9"}}))), Some("urn:uuid:9".into()));
        assert_eq!(patient_reference(&r(json!({"subject": {"reference": "Group/g"}}))), None);
        assert_eq!(
            patient_reference(&r(
                json!({"participant": [{"actor": {"reference": "Practitioner/d"}}, {"actor": {"reference": "Patient/p2"}}]})
            )),
            Some("Patient/p2".into())
        );
        assert_eq!(patient_reference(&r(json!({"code": {"text": "x"}}))), None);
    }

    #[test]
    fn references_are_rewritten_everywhere_and_only_when_known() {
        let mut v = json!({"subject": {"reference": "urn:uuid:1"}, "x": [{"reference": "urn:uuid:2"}, {"reference": "urn:uuid:3"}], "reference": {"reference": "urn:uuid:1"}});
        let map = HashMap::from([
            ("urn:uuid:1".to_string(), "Patient/a".to_string()),
            ("urn:uuid:2".to_string(), "Encounter/b".to_string()),
        ]);
        assert_eq!(rewrite_references(&mut v, &map), 3);
        assert_eq!(v["subject"]["reference"], "Patient/a");
        assert_eq!(v["x"][0]["reference"], "Encounter/b");
        assert_eq!(v["x"][1]["reference"], "urn:uuid:3");
        assert_eq!(v["reference"]["reference"], "Patient/a");
    }

    #[test]
    fn invalid_resources_are_refused_with_paths() {
        assert_eq!(parse_resource(b"[1]").unwrap_err().status, 400);
        assert_eq!(parse_resource(b"{\"a\":1}").unwrap_err().status, 400);
        assert_eq!(parse_resource(b"\xff").unwrap_err().status, 400);
        let e = parse_resource(br#"{"resourceType":"Observation","status":"final"}"#).unwrap_err();
        assert_eq!(e.status, 422, "Observation.code is required");
        assert!(e.issues.iter().any(|(path, _)| path.starts_with("Observation")), "{e:?}");
        let e = parse_resource(br#"{"resourceType":"Patient","gender":"x y "}"#).unwrap_err();
        assert_eq!(e.issues[0].0, "Patient.gender");
        assert!(parse_resource(br#"{"resourceType":"Patient","gender":"female"}"#).is_ok());
        let outcome = e.outcome();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(validate(&outcome.to_string()).is_ok(), "our OperationOutcome is valid R4");
    }

    #[test]
    fn the_capability_statement_is_valid_r4() {
        let cs = capability_statement("http://127.0.0.1:1/", "2026-11-27");
        validate(&cs.to_string()).unwrap();
    }
}
