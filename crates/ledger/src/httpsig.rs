//! API request authentication with HTTP Message Signatures (RFC 9421), Ed25519, and a
//! `Content-Digest` (RFC 9530) of the body.
//!
//! Every request that reads or writes anything about a patient carries
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: sig=("@method" "@path" "@query" "@authority" "content-digest");created=<unix s>;nonce="<random>";keyid="<member id>";alg="ed25519";tag="medledger-api"
//! Signature: sig=:<base64 Ed25519 signature over the signature base>:
//! ```
//!
//! The signature base is RFC 9421 §2.5's, so any RFC 9421 library can produce or check it. This
//! profile fixes the covered components (all five, in this order) and requires `created`, `nonce`,
//! `keyid`, `alg="ed25519"` and `tag="medledger-api"`. The node accepts a signature only within
//! [`REQUEST_SKEW_MS_MAX`] of its clock and only once per nonce (it remembers nonces for twice
//! that window), so a captured request cannot be replayed.
//!
//! Parsing is pure and bounded; the replay cache lives in the node.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use medledger_crypto::sign::{Signature, SigningKey, VerifyingKey};
use medledger_types::limits::REQUEST_SKEW_MS_MAX;
use sfv::{BareItem, Dictionary, FieldType as _, InnerList, Item, ListEntry, Parser};

pub const HEADER_SIGNATURE_INPUT: &str = "signature-input";
pub const HEADER_SIGNATURE: &str = "signature";
pub const HEADER_CONTENT_DIGEST: &str = "content-digest";
/// The `tag` parameter of this profile.
pub const TAG: &str = "medledger-api";
/// The covered components, in order.
pub const COMPONENTS: [&str; 5] = ["@method", "@path", "@query", "@authority", "content-digest"];
/// Longest accepted signature header value, and nonce.
pub const HEADER_BYTES_MAX: usize = 2048;
pub const NONCE_BYTES_MAX: usize = 64;
/// A random nonce for [`sign`]: 16 bytes, base64url.
pub fn new_nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(medledger_crypto::random_bytes::<16>())
}
const LABEL: &str = "sig";

/// The request parts a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query without `?`, if any.
    pub query: Option<&'a str>,
    /// `host[:port]` as the client addressed it (the `Host` header).
    pub authority: &'a str,
    pub body: &'a [u8],
}

impl<'a> RequestParts<'a> {
    /// The parts of a request to an absolute `http(s)://authority/path?query` URL (as a client
    /// library normalizes it), or `None` for anything else.
    pub fn of_url(method: &'a str, url: &'a str, body: &'a [u8]) -> Option<Self> {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
        let (authority, target) = rest.split_at(rest.find('/')?);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        (!authority.is_empty()).then_some(Self { method, path, query, authority, body })
    }
}

/// A checked signature's parameters, for the caller to look the key up and to remember the nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// Who signed: a member id in hex, or `validator-K` for a validator's sync requests.
    pub keyid: String,
    pub created_ms: u64,
    pub nonce: String,
    base: Vec<u8>,
    signature: Signature,
}

impl SignedBy {
    /// Checks the signature with the signer's key (found by the caller from `keyid`).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_raw(&self.base, &self.signature).is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpSigError {
    #[error("missing signature headers")]
    Missing,
    #[error("malformed signature headers: {0}")]
    Malformed(&'static str),
    #[error("the signature does not cover {0}")]
    Components(&'static str),
    #[error("request time too far from the node's clock")]
    Stale,
    #[error("the body does not match its Content-Digest")]
    Digest,
}

/// `sha-256=:<base64>:` of `body`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(medledger_crypto::sha256(body)))
}

fn authority(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    lower.strip_suffix(":80").map(str::to_string).unwrap_or(lower)
}

/// The serialized inner list of the signature parameters (`@signature-params`).
fn params_value(inner: &InnerList) -> Result<String, HttpSigError> {
    vec![ListEntry::InnerList(inner.clone())].serialize().ok_or(HttpSigError::Malformed("empty signature input"))
}

/// RFC 9421 §2.5 signature base.
fn signature_base(parts: &RequestParts<'_>, digest: &str, params: &str) -> Vec<u8> {
    let query = format!("?{}", parts.query.unwrap_or(""));
    let values =
        [parts.method.to_string(), parts.path.to_string(), query, authority(parts.authority), digest.to_string()];
    let mut base = String::new();
    for (name, value) in COMPONENTS.iter().zip(values) {
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {params}"));
    base.into_bytes()
}

fn key(name: &str) -> sfv::Key {
    sfv::KeyRef::from_str(name).expect("a valid key").to_owned()
}

fn string(value: &str) -> Result<BareItem, HttpSigError> {
    Ok(BareItem::String(sfv::StringRef::from_str(value).map_err(|_| HttpSigError::Malformed("string"))?.to_owned()))
}

/// The headers that sign a request: (name, value) pairs to add to it.
pub fn sign(
    key_: &SigningKey,
    keyid: &str,
    parts: &RequestParts<'_>,
    created_ms: u64,
    nonce: &str,
) -> [(&'static str, String); 3] {
    let items: Vec<Item> =
        COMPONENTS.iter().map(|c| Item::new(string(c).expect("component names are strings"))).collect();
    let mut params = sfv::Parameters::new();
    params.insert(key("created"), BareItem::Integer(sfv::Integer::constant((created_ms / 1000) as i64)));
    params.insert(key("nonce"), string(nonce).expect("nonces are base64url"));
    params.insert(key("keyid"), string(keyid).expect("key ids are ASCII"));
    params.insert(key("alg"), string("ed25519").expect("ascii"));
    params.insert(key("tag"), string(TAG).expect("ascii"));
    let inner = InnerList::with_params(items, params);
    let params_text = params_value(&inner).expect("non-empty");
    let digest = content_digest(parts.body);
    let signature = key_.sign_raw(&signature_base(parts, &digest, &params_text));
    [
        (HEADER_CONTENT_DIGEST, digest),
        (HEADER_SIGNATURE_INPUT, format!("{LABEL}={params_text}")),
        (HEADER_SIGNATURE, format!("{LABEL}=:{}:", STANDARD.encode(signature.0))),
    ]
}

/// Parses and checks a request's signature headers against the request, without the key: the
/// profile, the covered components, the body digest and the time window (`now_ms`). The caller
/// then looks the member up, calls [`SignedBy::verify`], and refuses a nonce seen before.
pub fn check(
    parts: &RequestParts<'_>,
    signature_input: Option<&str>,
    signature: Option<&str>,
    content_digest_header: Option<&str>,
    now_ms: u64,
) -> Result<SignedBy, HttpSigError> {
    let (Some(input), Some(signature)) = (signature_input, signature) else { return Err(HttpSigError::Missing) };
    if input.len() > HEADER_BYTES_MAX || signature.len() > HEADER_BYTES_MAX {
        return Err(HttpSigError::Malformed("header too long"));
    }
    let inputs: Dictionary = Parser::new(input).parse().map_err(|_| HttpSigError::Malformed("Signature-Input"))?;
    let signatures: Dictionary = Parser::new(signature).parse().map_err(|_| HttpSigError::Malformed("Signature"))?;
    if inputs.len() != 1 || signatures.len() != 1 {
        return Err(HttpSigError::Malformed("exactly one signature expected"));
    }
    let (label, entry) = inputs.iter().next().expect("one entry");
    let Some(ListEntry::InnerList(inner)) = Some(entry) else {
        return Err(HttpSigError::Malformed("Signature-Input is not an inner list"));
    };
    let signature: [u8; 64] = match signatures.get(label) {
        Some(ListEntry::Item(Item { bare_item: BareItem::ByteSequence(bytes), .. })) => {
            bytes.as_slice().try_into().map_err(|_| HttpSigError::Malformed("signature length"))?
        }
        _ => return Err(HttpSigError::Malformed("no signature for the input's label")),
    };
    let names: Vec<&str> = inner
        .items
        .iter()
        .map(|item| match &item.bare_item {
            BareItem::String(s) if item.params.is_empty() => Ok(s.as_str()),
            _ => Err(HttpSigError::Malformed("component")),
        })
        .collect::<Result<_, _>>()?;
    if names != COMPONENTS {
        return Err(HttpSigError::Components("@method @path @query @authority content-digest, in that order"));
    }
    let text = |name: &str| match inner.params.get(name) {
        Some(BareItem::String(s)) => Ok(s.as_str().to_string()),
        _ => Err(HttpSigError::Malformed("a required string parameter is missing")),
    };
    if text("alg")? != "ed25519" || text("tag")? != TAG {
        return Err(HttpSigError::Malformed("alg must be ed25519 and tag medledger-api"));
    }
    let keyid = text("keyid")?;
    let nonce = text("nonce")?;
    if keyid.is_empty() || keyid.len() > NONCE_BYTES_MAX {
        return Err(HttpSigError::Malformed("keyid length"));
    }
    if nonce.is_empty() || nonce.len() > NONCE_BYTES_MAX {
        return Err(HttpSigError::Malformed("nonce length"));
    }
    let created = match inner.params.get("created") {
        Some(BareItem::Integer(i)) => u64::try_from(i64::from(*i)).map_err(|_| HttpSigError::Malformed("created"))?,
        _ => return Err(HttpSigError::Malformed("created is missing")),
    };
    let created_ms = created.saturating_mul(1000);
    if now_ms.abs_diff(created_ms) > REQUEST_SKEW_MS_MAX {
        return Err(HttpSigError::Stale);
    }
    let digest = content_digest(parts.body);
    if content_digest_header != Some(digest.as_str()) {
        return Err(HttpSigError::Digest);
    }
    let base = signature_base(parts, &digest, &params_value(inner)?);
    Ok(SignedBy { keyid, created_ms, nonce, base, signature: Signature(signature) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_types::MemberId;

    const NOW: u64 = 1_790_000_000_000;

    fn parts<'a>(body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method: "GET",
            path: "/v1/patients/abc/audit",
            query: Some("limit=5"),
            authority: "127.0.0.1:27400",
            body,
        }
    }

    fn headers(key: &SigningKey, member: MemberId, parts: &RequestParts<'_>) -> [(&'static str, String); 3] {
        sign(key, &member.to_hex(), parts, NOW, "bm9uY2Utb25l")
    }

    fn run(parts: &RequestParts<'_>, h: &[(&'static str, String); 3], now: u64) -> Result<SignedBy, HttpSigError> {
        check(parts, Some(&h[1].1), Some(&h[2].1), Some(&h[0].1), now)
    }

    #[test]
    fn signature_base_is_rfc_9421_shaped() {
        let member = MemberId::new([7; 16]);
        let key = SigningKey::from_bytes(&[1; 32]);
        let h = headers(&key, member, &parts(b""));
        assert_eq!(h[0].1, "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
        let expected_input = format!(
            "sig=(\"@method\" \"@path\" \"@query\" \"@authority\" \"content-digest\");created={};nonce=\"bm9uY2Utb25l\";keyid=\"{}\";alg=\"ed25519\";tag=\"medledger-api\"",
            NOW / 1000,
            member.to_hex()
        );
        assert_eq!(h[1].1, expected_input);
        let signed = run(&parts(b""), &h, NOW).unwrap();
        let base = String::from_utf8(signed.base.clone()).unwrap();
        let expected_base = format!(
            "\"@method\": GET\n\"@path\": /v1/patients/abc/audit\n\"@query\": ?limit=5\n\"@authority\": 127.0.0.1:27400\n\"content-digest\": sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:\n\"@signature-params\": {}",
            &expected_input[4..]
        );
        assert_eq!(base, expected_base);
        // A plain RFC 8032 verifier accepts it: no medledger namespace in the signed bytes.
        let raw = ed25519_consensus::VerificationKey::try_from(key.verifying_key().0).unwrap();
        assert!(raw.verify(&ed25519_consensus::Signature::from(signed.signature.0), base.as_bytes()).is_ok());
        assert!(signed.verify(&key.verifying_key()));
        assert_eq!((signed.keyid, signed.nonce.as_str(), signed.created_ms), (member.to_hex(), "bm9uY2Utb25l", NOW));
    }

    #[test]
    fn every_covered_part_and_parameter_is_bound() {
        let member = MemberId::new([7; 16]);
        let key = SigningKey::from_bytes(&[1; 32]);
        let body = b"body bytes";
        let good = RequestParts { method: "PUT", ..parts(body) };
        let h = headers(&key, member, &good);
        assert!(run(&good, &h, NOW).unwrap().verify(&key.verifying_key()));
        assert!(!run(&good, &h, NOW).unwrap().verify(&SigningKey::from_bytes(&[2; 32]).verifying_key()));
        // Each change of what the signature covers: the check still parses, the signature fails.
        for changed in [
            RequestParts { method: "GET", ..good },
            RequestParts { path: "/v1/patients/abd/audit", ..good },
            RequestParts { query: Some("limit=500"), ..good },
            RequestParts { query: None, ..good },
            RequestParts { authority: "127.0.0.1:27401", ..good },
        ] {
            assert!(!run(&changed, &h, NOW).unwrap().verify(&key.verifying_key()), "{changed:?}");
        }
        // A different body no longer matches the digest; a fixed-up digest breaks the signature.
        let other = RequestParts { body: b"other bytes", ..good };
        assert_eq!(run(&other, &h, NOW), Err(HttpSigError::Digest));
        let refreshed = [(h[0].0, content_digest(b"other bytes")), h[1].clone(), h[2].clone()];
        assert!(!run(&other, &refreshed, NOW).unwrap().verify(&key.verifying_key()));
        // Outside the window either way.
        assert_eq!(run(&good, &h, NOW + REQUEST_SKEW_MS_MAX + 1000), Err(HttpSigError::Stale));
        assert_eq!(run(&good, &h, NOW - REQUEST_SKEW_MS_MAX - 1000), Err(HttpSigError::Stale));
        // Parameters are signed too: a changed nonce or keyid breaks the signature.
        for (from, to) in [("bm9uY2Utb25l", "bm9uY2UtdHdv"), (&member.to_hex()[..4], "ffff")] {
            let input = h[1].1.replacen(from, to, 1);
            let forged = [h[0].clone(), (h[1].0, input), h[2].clone()];
            if let Ok(signed) = run(&good, &forged, NOW) {
                assert!(!signed.verify(&key.verifying_key()));
            }
        }
    }

    #[test]
    fn url_parts() {
        let p = RequestParts::of_url("GET", "http://127.0.0.1:27400/v1/records/ab?limit=5", b"").unwrap();
        assert_eq!((p.authority, p.path, p.query), ("127.0.0.1:27400", "/v1/records/ab", Some("limit=5")));
        let p = RequestParts::of_url("GET", "https://node.example/v1/status", b"").unwrap();
        assert_eq!((p.authority, p.path, p.query), ("node.example", "/v1/status", None));
        for bad in ["ftp://x/y", "http://", "http:///path", "127.0.0.1/v1", "http://host"] {
            assert!(RequestParts::of_url("GET", bad, b"").is_none(), "{bad}");
        }
    }

    #[test]
    fn other_profiles_and_garbage_are_refused() {
        let member = MemberId::new([7; 16]);
        let key = SigningKey::from_bytes(&[1; 32]);
        let p = parts(b"");
        let h = headers(&key, member, &p);
        assert_eq!(check(&p, None, Some(&h[2].1), Some(&h[0].1), NOW), Err(HttpSigError::Missing));
        let cases = [
            h[1].1.replace("\"@authority\" ", ""),
            h[1].1.replace("\"@path\" \"@query\"", "\"@query\" \"@path\""),
            h[1].1.replace("ed25519", "hmac-sha256"),
            h[1].1.replace("medledger-api", "other"),
            h[1].1.replace(";nonce=\"bm9uY2Utb25l\"", ""),
            h[1].1.replace("sig=", "other="),
            format!("{}, sig2=(\"@method\")", h[1].1),
            "sig=(".to_string(),
            "x".repeat(HEADER_BYTES_MAX + 1),
            "\u{1F600}".to_string(),
        ];
        for input in cases {
            assert!(check(&p, Some(&input), Some(&h[2].1), Some(&h[0].1), NOW).is_err(), "{input}");
        }
        for sig in ["sig=:AAAA:", "sig=?1", "", "sig=:!!:"] {
            assert!(check(&p, Some(&h[1].1), Some(sig), Some(&h[0].1), NOW).is_err(), "{sig}");
        }
    }
}
