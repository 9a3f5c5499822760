use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use crate::limits::ORG_ID_BYTES_MAX;

macro_rules! byte_id {
    ($(#[$m:meta])* $name:ident, $len:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            pub fn new(bytes: [u8; $len]) -> Self { Self(bytes) }
            pub fn as_bytes(&self) -> &[u8; $len] { &self.0 }
            pub fn to_hex(&self) -> String { hex::encode(self.0) }
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({})", stringify!($name), self.to_hex()) }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.to_hex()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_hex(s).ok_or_else(|| format!("expected {} hex characters for a {}", $len * 2, stringify!($name)))
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(&self.to_hex()) }
        }
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::schema::hex_string($len, stringify!($name))
            }
        }
        impl utoipa::ToSchema for $name {}
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as Deserialize>::deserialize(d)?;
                Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom(concat!("invalid ", stringify!($name))))
            }
        }
    };
}

byte_id!(
    /// A network's identity; part of every signature so nothing signed for one chain is valid on another.
    ChainId, 32
);
byte_id!(
    /// A member (patient, clinician, admin, …): 16 random bytes chosen on the member's device. For a
    /// patient this is the pseudonym the ledger knows them by.
    MemberId, 16
);
byte_id!(
    /// A record: 16 random bytes chosen by its author; carries no patient data.
    RecordId, 16
);
byte_id!(
    /// SHA-256 of a transaction's signed bytes.
    TxId, 32
);
byte_id!(
    /// SHA-256 of a block header's canonical encoding.
    BlockHash, 32
);
byte_id!(
    /// A SHA-256 digest (ciphertexts, sidecars, roots).
    Digest, 32
);
byte_id!(
    /// A compressed Ristretto255 point: one Pedersen commitment of a threshold sharing.
    Commitment, 32
);

macro_rules! counter {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const ZERO: Self = Self(0);
            pub const fn new(value: u64) -> Self { Self(value) }
            pub const fn get(self) -> u64 { self.0 }
            /// The next value; `None` on overflow.
            pub fn checked_next(self) -> Option<Self> { self.0.checked_add(1).map(Self) }
        }
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::schema::counter(stringify!($name))
            }
        }
        impl utoipa::ToSchema for $name {}
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}", self.0) }
        }
    };
}

counter!(
    /// A block's position in the chain; genesis is 0.
    Height
);
counter!(
    /// A signer's transaction counter: each transaction must carry a nonce above the signer's last.
    Nonce
);
counter!(
    /// Milliseconds since the Unix epoch. Ledger logic only ever sees block time.
    Timestamp
);

/// Bits of a nonce that name its lane: the top 12 of 64. A member's clients (the CLI, a gateway,
/// an import, another device) each sign in a lane of their own, so their counters never collide;
/// the ledger keeps the last nonce per signer and lane.
pub const NONCE_LANE_BITS: u32 = 12;
/// Lanes per signer (lane 0 is the validators' own and the default).
pub const NONCE_LANES: u16 = 1 << NONCE_LANE_BITS;
const NONCE_COUNTER_BITS: u32 = 64 - NONCE_LANE_BITS;

impl Nonce {
    /// The lane this nonce belongs to.
    pub fn lane(self) -> u16 {
        (self.0 >> NONCE_COUNTER_BITS) as u16
    }

    /// `counter` in `lane`; `None` if the lane or the counter is out of range.
    pub fn in_lane(lane: u16, counter: u64) -> Option<Self> {
        (lane < NONCE_LANES && counter < 1 << NONCE_COUNTER_BITS)
            .then(|| Self((u64::from(lane) << NONCE_COUNTER_BITS) | counter))
    }

    /// The counter within the lane.
    pub fn counter(self) -> u64 {
        self.0 & ((1 << NONCE_COUNTER_BITS) - 1)
    }
}

impl Timestamp {
    pub fn checked_add_ms(self, ms: u64) -> Option<Self> {
        self.0.checked_add(ms).map(Self)
    }
    pub fn saturating_sub(self, other: Self) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// An organisation of the consortium: lower-case letters, digits and '-', 1 to 32 characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, Serialize)]
#[serde(transparent)]
pub struct OrgId(String);

/// A string that is not a valid organisation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("organisation ids are 1 to {ORG_ID_BYTES_MAX} characters of a-z, 0-9, '-' and '_'")]
pub struct OrgIdError;

impl utoipa::PartialSchema for OrgId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::org_id()
    }
}
impl utoipa::ToSchema for OrgId {}

impl OrgId {
    pub fn new(s: &str) -> Result<Self, OrgIdError> {
        let ok = !s.is_empty()
            && s.len() <= ORG_ID_BYTES_MAX
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok { Ok(Self(s.to_owned())) } else { Err(OrgIdError) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({})", self.0)
    }
}
impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for OrgId {
    type Err = OrgIdError;
    fn from_str(s: &str) -> Result<Self, OrgIdError> {
        Self::new(s)
    }
}
impl BorshDeserialize for OrgId {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let s = String::deserialize_reader(reader)?;
        Self::new(&s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
impl<'de> Deserialize<'de> for OrgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_hex() {
        let id = MemberId::new([7; 16]);
        assert_eq!(id.to_hex().parse::<MemberId>().unwrap(), id);
        assert!("xyz".parse::<MemberId>().is_err());
        assert!(RecordId::from_hex(&"ab".repeat(15)).is_none());
    }

    #[test]
    fn org_ids_are_validated() {
        assert!(OrgId::new("st-mary_1").is_ok());
        for bad in ["", "Upper", "a b", "x/y", &"a".repeat(33)] {
            assert!(OrgId::new(bad).is_err(), "{bad:?} accepted");
        }
        let bytes = crate::encode(&"Bad Org".to_string());
        assert!(crate::decode_canonical::<OrgId>(&bytes, 64).is_err());
    }

    #[test]
    fn counters_do_not_overflow() {
        assert_eq!(Height::new(u64::MAX).checked_next(), None);
        assert_eq!(Nonce::new(4).checked_next(), Some(Nonce::new(5)));
        let n = Nonce::in_lane(7, 42).unwrap();
        assert_eq!((n.lane(), n.counter()), (7, 42));
        assert_eq!(Nonce::new(5).lane(), 0);
        assert!(Nonce::in_lane(NONCE_LANES, 1).is_none());
        assert!(Nonce::in_lane(1, 1 << 52).is_none());
    }
}
