//! Content digests (`sha256:<64 hex>`), validated before they ever become a file name.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated sha256 digest, stored lowercase as `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// A string that is not `sha256:` (or `sha256-`) followed by 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest format")]
pub struct InvalidDigest;

impl Digest {
    /// Parses `sha256:<hex>` or the file-name form `sha256-<hex>`; nothing else gets through.
    pub fn parse(text: &str) -> Result<Self, InvalidDigest> {
        let hex = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("sha256-"))
            .ok_or(InvalidDigest)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidDigest);
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The blob's file name in the store: `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_separators_and_normalises_case() {
        let hex = "A".repeat(64);
        let d = Digest::parse(&format!("sha256-{hex}")).unwrap();
        assert_eq!(d.to_string(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(d.file_name(), format!("sha256-{}", "a".repeat(64)));
    }

    #[test]
    fn rejects_everything_that_could_escape_the_blob_dir() {
        for bad in [
            "sha256:../../x",
            "sha256:",
            &format!("sha256:{}/", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha256:{}\0", "a".repeat(63)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<Digest>("\"sha256:../../etc/passwd\"").is_err());
    }
}
