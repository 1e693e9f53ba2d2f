//! The 64-byte BLAKE2b key that names every leaf and root object (128 lowercase hex chars).

use std::fmt;
use std::str::FromStr;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 64;

/// A leaf or root key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; KEY_LEN]);

/// A string that is not a valid key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid key {text:?}: expected 128 lowercase hexadecimal characters")]
pub struct InvalidKey {
    /// The offending text (truncated to 140 characters).
    pub text: String,
}

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a key from a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The lowercase hex form, which is also the object name in the blob bucket.
    pub fn to_hex(self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(KEY_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

impl FromStr for Key {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidKey {
            text: s.chars().take(140).collect(),
        };
        let digits = s.as_bytes();
        if digits.len() != KEY_LEN * 2 {
            return Err(invalid());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let (hi, lo) = (nibble(pair[0]), nibble(pair[1]));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => return Err(invalid()),
            }
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut bytes = [0u8; KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        let key = Key::from_bytes(bytes);
        let parsed: Key = key.to_hex().parse().unwrap();
        assert_eq!(parsed, key);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("abc".parse::<Key>().is_err());
        assert!("A".repeat(128).parse::<Key>().is_err());
        assert!("g".repeat(128).parse::<Key>().is_err());
        assert!("0".repeat(128).parse::<Key>().is_ok());
    }
}
