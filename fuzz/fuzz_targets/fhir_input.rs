//! The FHIR gateway's request bodies: parsed and validated as R4, strictly, or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = medledger_gateway::fhir::parse_resource(data);
});
