//! RFC 9421 request signatures as a validator receives them: `Signature-Input`, `Signature` and
//! `Content-Digest` headers and the request target, each from the input (split on newlines).
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_ledger::httpsig::{RequestParts, check};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let (input, signature, digest) = (lines.next(), lines.next(), lines.next());
    let body = lines.next().unwrap_or("").as_bytes();
    let parts = RequestParts { method: "POST", path, query, authority: "127.0.0.1:7400", body };
    let _ = check(&parts, input, signature, digest, 1_800_000_000_000);
});
