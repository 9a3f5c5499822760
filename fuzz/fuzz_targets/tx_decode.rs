//! A transaction from outside (API, peers, the chain log): decoding is bounded and canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_ledger::Transaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Transaction::decode(data) {
        // Canonical: what decodes re-encodes to the very bytes (one encoding per transaction,
        // so its id and signature cover exactly what was sent).
        assert_eq!(tx.encode(), data);
        let _ = (tx.id(), tx.body.kind.name(), tx.body.kind.sidecar_record());
    }
});
