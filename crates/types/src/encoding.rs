use borsh::{BorshDeserialize, BorshSerialize};

/// Why bytes were refused as the canonical encoding of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("encoding is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed encoding")]
    Malformed,
    #[error("non-canonical encoding")]
    NonCanonical,
}

/// Encodes a value in the canonical encoding (borsh).
pub fn encode<T: BorshSerialize>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).expect("borsh encoding into a Vec never fails")
}

/// An optional field added to an existing format without changing the encoding of the values
/// that lack it: `None` encodes as nothing at all, `Some(v)` as `1 ‖ v`. Values written before the
/// field existed therefore keep their bytes, digests and state roots.
///
/// Only valid as the **last field of a value decoded from a whole buffer** (a state entry, a
/// sidecar): it reads "absent" from the end of input, so anywhere else it would swallow the bytes
/// that follow. A zero tag is refused, so each value has one encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Trailing<T>(pub Option<T>);

impl<T> Default for Trailing<T> {
    fn default() -> Self {
        Trailing(None)
    }
}

impl<T: BorshSerialize> BorshSerialize for Trailing<T> {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(value) => {
                writer.write_all(&[1])?;
                value.serialize(writer)
            }
        }
    }
}

impl<T: BorshDeserialize> BorshDeserialize for Trailing<T> {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let mut tag = [0u8; 1];
        loop {
            match reader.read(&mut tag) {
                Ok(0) => return Ok(Trailing(None)),
                Ok(_) if tag[0] == 1 => return Ok(Trailing(Some(T::deserialize_reader(reader)?))),
                Ok(_) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "trailing field tag must be 1"));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: serde::Serialize> serde::Serialize for Trailing<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Trailing<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(Trailing)
    }
}

impl<T> From<Option<T>> for Trailing<T> {
    fn from(value: Option<T>) -> Self {
        Trailing(value)
    }
}

/// Decodes `bytes` (at most `max_bytes`) and accepts them only if they are the canonical encoding of
/// the decoded value: no trailing bytes, and re-encoding yields the same bytes.
pub fn decode_canonical<T: BorshSerialize + BorshDeserialize>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge { len: bytes.len(), max: max_bytes });
    }
    let value: T = borsh::from_slice(bytes).map_err(|_| DecodeError::Malformed)?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(BorshSerialize, BorshDeserialize, Debug, PartialEq)]
    struct Sample {
        flag: bool,
        items: Vec<u16>,
    }

    #[derive(BorshSerialize, BorshDeserialize, Debug, PartialEq)]
    struct Before {
        items: Vec<u16>,
    }

    #[derive(BorshSerialize, BorshDeserialize, Debug, PartialEq)]
    struct After {
        items: Vec<u16>,
        extra: Trailing<u32>,
    }

    #[test]
    fn a_trailing_field_keeps_old_encodings() {
        let old = encode(&Before { items: vec![1, 2] });
        let read: After = decode_canonical(&old, 64).unwrap();
        assert_eq!(read, After { items: vec![1, 2], extra: Trailing(None) });
        assert_eq!(encode(&read), old);
        let new = encode(&After { items: vec![1], extra: Trailing(Some(7)) });
        assert_eq!(new.len(), old.len() - 2 + 1 + 4);
        assert_eq!(decode_canonical::<After>(&new, 64).unwrap().extra, Trailing(Some(7)));
        // An explicit "absent" tag, or anything else, is not an encoding.
        let mut zero = old.clone();
        zero.push(0);
        assert!(decode_canonical::<After>(&zero, 64).is_err());
        let mut bad = old;
        bad.extend_from_slice(&[2, 0, 0, 0, 0]);
        assert!(decode_canonical::<After>(&bad, 64).is_err());
    }

    #[test]
    fn round_trip() {
        let s = Sample { flag: true, items: vec![1, 2, 3] };
        assert_eq!(decode_canonical::<Sample>(&encode(&s), 64).unwrap(), s);
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&Sample { flag: false, items: vec![] });
        bytes.push(0);
        assert_eq!(decode_canonical::<Sample>(&bytes, 64), Err(DecodeError::Malformed));
    }

    #[test]
    fn non_canonical_bool_rejected() {
        let mut bytes = encode(&Sample { flag: true, items: vec![] });
        bytes[0] = 2;
        assert!(decode_canonical::<Sample>(&bytes, 64).is_err());
    }

    #[test]
    fn oversize_rejected_before_parsing() {
        let bytes = encode(&Sample { flag: true, items: vec![7; 100] });
        assert!(matches!(decode_canonical::<Sample>(&bytes, 10), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn huge_declared_length_is_an_error_not_an_allocation() {
        // flag, then a u32 length of 4 billion with no elements behind it.
        let bytes = [1u8, 0xff, 0xff, 0xff, 0xf0];
        assert_eq!(decode_canonical::<Sample>(&bytes, 64), Err(DecodeError::Malformed));
    }
}
