//! A block from a peer or the chain log: decoding and the shape checks verification starts with.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_ledger::Block;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        let _ = block.check_shape();
        let _ = block.digest();
        assert!(Block::decode(&block.encode()).is_ok(), "what decoded re-encodes and decodes");
    }
});
