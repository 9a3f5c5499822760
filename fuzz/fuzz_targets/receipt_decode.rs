//! A receipt file handed to `receipt verify`: decoding is bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_ledger::receipt::Receipt;

fuzz_target!(|data: &[u8]| {
    if let Ok(receipt) = Receipt::decode(data) {
        assert!(Receipt::decode(&receipt.encode()).is_ok(), "what decoded re-encodes and decodes");
    }
});
