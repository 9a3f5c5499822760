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
