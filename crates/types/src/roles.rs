use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A string that is not one of the accepted codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::schema::code(&[$($text),+])
            }
        }
        impl utoipa::ToSchema for $name {}
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(ParseError { what: $what, value: s.chars().take(32).collect(), expected: concat!($($text, " "),+) }) }
            }
        }
    };
}

code_enum!(
    /// A member's role in its organisation (DESIGN §3).
    Role, "role", {
        Patient = "patient",
        Doctor = "doctor",
        Nurse = "nurse",
        Admin = "admin",
        Auditor = "auditor",
        Emergency = "emergency",
    }
);

impl Role {
    /// Roles that treat patients and may be granted access to records.
    pub fn is_clinical(self) -> bool {
        matches!(self, Role::Doctor | Role::Nurse | Role::Emergency)
    }
}

code_enum!(
    /// Why a record is read: HL7 v3 PurposeOfUse codes, so no free text reaches the ledger.
    PurposeOfUse, "purpose", {
        /// Treatment.
        Treat = "TREAT",
        /// Emergency treatment.
        Etreat = "ETREAT",
        /// Healthcare payment.
        Hpaymt = "HPAYMT",
        /// Healthcare operations.
        Hoperat = "HOPERAT",
        /// Patient requested.
        Patrqt = "PATRQT",
        /// Healthcare research.
        Hresch = "HRESCH",
        /// Legal.
        Legal = "LEGAL",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
        for p in PurposeOfUse::ALL {
            assert_eq!(p.as_str().parse::<PurposeOfUse>().unwrap(), *p);
        }
        assert!("surgeon".parse::<Role>().is_err());
        assert!("treat".parse::<PurposeOfUse>().is_err());
    }
}
