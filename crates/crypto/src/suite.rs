//! Crypto agility: stable one-byte ids for the algorithm suites.
//!
//! Every envelope, encryption key and payload header names its suite, so a
//! record keeps the suite it was written with and new suites can be added
//! without breaking old data. Ids are never reused; decoding rejects ids this
//! version does not know.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CryptoError;

/// The HPKE (RFC 9180) suite used to wrap keys for a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum KemSuite {
    /// X-Wing (X25519 + ML-KEM-768), HKDF-SHA256, AES-256-GCM. Post-quantum
    /// hybrid; the default.
    #[default]
    XWing = 1,
    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. Kept for
    /// interoperability.
    X25519 = 2,
}

/// The symmetric construction of a record payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum PayloadSuite {
    /// AES-256-GCM in the STREAM construction with 64 KiB plaintext segments.
    #[default]
    Aes256GcmStream64K = 1,
    /// The same segment format under a data key derived from two halves,
    /// `HKDF(k_env ‖ k_thr)`, the second one released by the validators only after an audited
    /// access (DESIGN §6a; [`crate::threshold`]).
    Aes256GcmStream64KThreshold = 2,
}

impl KemSuite {
    /// Every suite this version knows, in id order.
    pub const ALL: [KemSuite; 2] = [KemSuite::XWing, KemSuite::X25519];

    /// The stable wire id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The stable text name (`"xwing"`, `"x25519"`).
    pub const fn name(self) -> &'static str {
        match self {
            KemSuite::XWing => "xwing",
            KemSuite::X25519 => "x25519",
        }
    }
}

impl PayloadSuite {
    /// Every suite this version knows, in id order.
    pub const ALL: [PayloadSuite; 2] = [PayloadSuite::Aes256GcmStream64K, PayloadSuite::Aes256GcmStream64KThreshold];

    /// The stable wire id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The stable text name.
    pub const fn name(self) -> &'static str {
        match self {
            PayloadSuite::Aes256GcmStream64K => "aes256gcm-stream64k",
            PayloadSuite::Aes256GcmStream64KThreshold => "aes256gcm-stream64k-threshold",
        }
    }
}

impl TryFrom<u8> for KemSuite {
    type Error = CryptoError;

    fn try_from(id: u8) -> Result<Self, CryptoError> {
        match id {
            1 => Ok(KemSuite::XWing),
            2 => Ok(KemSuite::X25519),
            id => Err(CryptoError::UnknownSuite { kind: "kem", id }),
        }
    }
}

impl TryFrom<u8> for PayloadSuite {
    type Error = CryptoError;

    fn try_from(id: u8) -> Result<Self, CryptoError> {
        match id {
            1 => Ok(PayloadSuite::Aes256GcmStream64K),
            2 => Ok(PayloadSuite::Aes256GcmStream64KThreshold),
            id => Err(CryptoError::UnknownSuite { kind: "payload", id }),
        }
    }
}

impl From<KemSuite> for u8 {
    fn from(suite: KemSuite) -> u8 {
        suite.id()
    }
}

impl From<PayloadSuite> for u8 {
    fn from(suite: PayloadSuite) -> u8 {
        suite.id()
    }
}

impl fmt::Display for KemSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for PayloadSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KemSuite {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, CryptoError> {
        KemSuite::ALL.into_iter().find(|suite| suite.name() == s).ok_or(CryptoError::UnknownSuiteName { kind: "kem" })
    }
}

impl FromStr for PayloadSuite {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, CryptoError> {
        PayloadSuite::ALL
            .into_iter()
            .find(|suite| suite.name() == s)
            .ok_or(CryptoError::UnknownSuiteName { kind: "payload" })
    }
}

/// Implements borsh as one byte (rejecting unknown ids) and serde as the text
/// name, for a suite enum.
macro_rules! suite_codecs {
    ($suite:ty) => {
        impl BorshSerialize for $suite {
            fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
                writer.write_all(&[self.id()])
            }
        }

        impl BorshDeserialize for $suite {
            fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
                let id = u8::deserialize_reader(reader)?;
                <$suite>::try_from(id).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            }
        }

        impl Serialize for $suite {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl utoipa::PartialSchema for $suite {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let names: Vec<&str> = <$suite>::ALL.iter().map(|suite| suite.name()).collect();
                medledger_types::schema::code(&names)
            }
        }
        impl utoipa::ToSchema for $suite {}

        impl<'de> Deserialize<'de> for $suite {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

suite_codecs!(KemSuite);
suite_codecs!(PayloadSuite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_pinned() {
        // Ids are part of every stored envelope and payload: never renumber.
        assert_eq!(KemSuite::XWing.id(), 1);
        assert_eq!(KemSuite::X25519.id(), 2);
        assert_eq!(PayloadSuite::Aes256GcmStream64K.id(), 1);
        assert_eq!(PayloadSuite::Aes256GcmStream64KThreshold.id(), 2);
        assert_eq!(KemSuite::default(), KemSuite::XWing);
    }

    #[test]
    fn u8_round_trip_and_unknown_ids_rejected() {
        for suite in KemSuite::ALL {
            assert_eq!(KemSuite::try_from(suite.id()).unwrap(), suite);
        }
        for id in [0u8, 3, 255] {
            assert!(matches!(
                KemSuite::try_from(id),
                Err(CryptoError::UnknownSuite { kind: "kem", id: got }) if got == id
            ));
        }
        assert!(PayloadSuite::try_from(0).is_err());
        assert!(PayloadSuite::try_from(3).is_err());
        for suite in PayloadSuite::ALL {
            assert_eq!(PayloadSuite::try_from(suite.id()).unwrap(), suite);
        }
    }

    #[test]
    fn borsh_is_one_byte_and_rejects_unknown() {
        assert_eq!(borsh::to_vec(&KemSuite::X25519).unwrap(), vec![2]);
        assert_eq!(borsh::from_slice::<KemSuite>(&[1]).unwrap(), KemSuite::XWing);
        assert!(borsh::from_slice::<KemSuite>(&[9]).is_err());
        assert!(borsh::from_slice::<PayloadSuite>(&[0]).is_err());
        assert!(borsh::from_slice::<KemSuite>(&[]).is_err());
    }

    #[test]
    fn display_and_serde_use_names() {
        assert_eq!(KemSuite::XWing.to_string(), "xwing");
        assert_eq!(KemSuite::X25519.to_string(), "x25519");
        assert_eq!(serde_json::to_string(&KemSuite::X25519).unwrap(), "\"x25519\"");
        assert_eq!(serde_json::from_str::<KemSuite>("\"xwing\"").unwrap(), KemSuite::XWing);
        assert!(serde_json::from_str::<KemSuite>("\"rsa\"").is_err());
        assert_eq!(
            serde_json::from_str::<PayloadSuite>("\"aes256gcm-stream64k\"").unwrap(),
            PayloadSuite::Aes256GcmStream64K
        );
    }
}
