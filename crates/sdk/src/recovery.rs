//! Codes a person writes down: the recovery code from which a member's keys derive (shown once,
//! when the keys are made), and the one-time code with which a patient claims an identity held in
//! custody (handed over in person).
//!
//! Both print as groups of hex digits; the recovery code ends with a 4-byte checksum group, so a
//! mistyped code is told apart from a code of other keys.

use medledger_crypto::local::derive_secret;
use medledger_crypto::sign::SigningKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::DecryptionKey;
use zeroize::Zeroizing;

use crate::error::{Result, SdkError};

const SIGN_LABEL: &[u8] = b"medledger/recovery-code/signing/v1";
const ENCRYPT_LABEL: &[u8] = b"medledger/recovery-code/encryption/v1";

fn groups(bytes: &[u8]) -> String {
    bytes.chunks(4).map(hex::encode).collect::<Vec<_>>().join("-")
}

fn parse_hex<const N: usize>(text: &str) -> Option<Zeroizing<[u8; N]>> {
    let digits: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !matches!(c, '-' | ' ')).collect());
    let mut out = Zeroizing::new([0u8; N]);
    hex::decode_to_slice(digits.to_ascii_lowercase(), &mut out[..]).ok()?;
    Some(out)
}

/// 32 random bytes from which a member's signing and encryption keys derive (HKDF-SHA256).
pub struct RecoveryCode(Zeroizing<[u8; 32]>);

impl RecoveryCode {
    pub fn generate() -> Self {
        RecoveryCode(Zeroizing::new(medledger_crypto::random_bytes()))
    }

    fn checksum(seed: &[u8; 32]) -> [u8; 4] {
        let digest = medledger_crypto::sha256(&[b"medledger/recovery-code/check".as_slice(), seed].concat());
        [digest[0], digest[1], digest[2], digest[3]]
    }

    /// The keys this code stands for.
    pub fn keys(&self, suite: KemSuite) -> Result<(SigningKey, DecryptionKey)> {
        let sign = derive_secret(&self.0[..], SIGN_LABEL).map_err(SdkError::other)?;
        let encrypt = derive_secret(&self.0[..], ENCRYPT_LABEL).map_err(SdkError::other)?;
        let encryption = DecryptionKey::from_bytes(suite, &encrypt[..]).map_err(SdkError::other)?;
        Ok((SigningKey::from_bytes(&sign), encryption))
    }

    /// The code as the member writes it down (9 groups of 8 hex digits, the last a checksum).
    pub fn reveal(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(self.0.to_vec());
        bytes.extend_from_slice(&Self::checksum(&self.0));
        Zeroizing::new(groups(&bytes))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bad = || SdkError::Usage("a recovery code is 9 groups of 8 hex digits, as it was shown".into());
        let bytes = parse_hex::<36>(text).ok_or_else(bad)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        if bytes[32..] != Self::checksum(&seed) {
            return Err(SdkError::Usage("the recovery code is mistyped (its checksum does not match)".into()));
        }
        Ok(RecoveryCode(seed))
    }
}

/// The one-time code of a custody release (16 random bytes).
pub struct ClaimCode(pub [u8; 16]);

impl ClaimCode {
    pub fn generate() -> Self {
        ClaimCode(medledger_crypto::random_bytes())
    }

    pub fn reveal(&self) -> String {
        groups(&self.0)
    }

    /// What the claim shows the ledger of this code (see [`medledger_ledger::claim_proof`]): the
    /// code itself, which opens the claim file, stays with the patient.
    pub fn proof(&self) -> [u8; 16] {
        medledger_ledger::claim_proof(&self.0)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bytes = parse_hex::<16>(text)
            .ok_or_else(|| SdkError::Usage("a claim code is 4 groups of 8 hex digits, as it was handed over".into()))?;
        Ok(ClaimCode(*bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_round_trips_and_a_typo_is_caught() {
        let code = RecoveryCode::generate();
        let shown = code.reveal();
        assert_eq!(shown.split('-').count(), 9);
        let again = RecoveryCode::parse(&shown.to_uppercase()).unwrap();
        let (a, b) = (code.keys(KemSuite::XWing).unwrap(), again.keys(KemSuite::XWing).unwrap());
        assert_eq!(a.0.verifying_key(), b.0.verifying_key());
        assert_eq!(a.1.encryption_key(), b.1.encryption_key());
        let mut typo: Vec<char> = shown.chars().collect();
        typo[3] = if typo[3] == '0' { '1' } else { '0' };
        assert!(RecoveryCode::parse(&typo.into_iter().collect::<String>()).is_err());
        assert!(RecoveryCode::parse("abc").is_err());
        let other = RecoveryCode::generate().keys(KemSuite::XWing).unwrap();
        assert_ne!(a.0.verifying_key(), other.0.verifying_key());
    }

    #[test]
    fn a_claim_code_round_trips() {
        let code = ClaimCode::generate();
        assert_eq!(ClaimCode::parse(&code.reveal()).unwrap().0, code.0);
        assert!(ClaimCode::parse("00").is_err());
    }
}
