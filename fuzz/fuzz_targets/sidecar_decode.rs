//! A sidecar (envelopes, shares, metadata) from outside, and a purged slot of the chain log.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_ledger::{Sidecar, parse_purged};

fuzz_target!(|data: &[u8]| {
    if let Ok(sidecar) = Sidecar::decode(data) {
        let facts = sidecar.facts();
        let again = Sidecar::decode(&sidecar.encode()).expect("what decoded re-encodes and decodes");
        assert_eq!(again.facts(), facts);
    }
    let _ = parse_purged(data);
});
