//! What datamon accepts as repo, label and bundle names.

use crate::error::{Error, Result};

/// A repo name: letters, digits and hyphens (datamon's `ValidateRepo`).
pub fn check_repo(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind: "repo",
            name: name.to_string(),
            reason: "repo names are letters, digits and hyphens (e.g. my-data-2)".into(),
        })
    }
}

/// A label name: letters, digits, hyphens and underscores (datamon's `ValidateLabel`).
pub fn check_label(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind: "label",
            name: name.to_string(),
            reason: "label names are letters, digits, hyphens and underscores (e.g. v1_final)"
                .into(),
        })
    }
}

/// A bundle id: a KSUID, 27 base-62 characters.
pub fn check_bundle_id(id: &str) -> Result<()> {
    let ok = id.len() == 27 && id.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind: "bundle id",
            name: id.to_string(),
            reason: "bundle ids are 27 letters and digits, as printed by `bundle upload` and `bundle list`".into(),
        })
    }
}

/// A context name: like a repo name (it also prefixes bucket names).
pub fn check_context(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind: "context",
            name: name.to_string(),
            reason:
                "context names are lowercase letters, digits and hyphens (they prefix bucket names)"
                    .into(),
        })
    }
}

/// A new bundle id (KSUID: time-ordered, so the last id is the latest bundle).
pub fn new_bundle_id() -> String {
    use svix_ksuid::KsuidLike;
    svix_ksuid::Ksuid::new(None::<std::time::SystemTime>, None).to_string()
}

/// The creation second of a bundle id (KSUID timestamp), if it is a KSUID.
pub fn bundle_id_second(id: &str) -> Option<u32> {
    use std::str::FromStr;
    svix_ksuid::Ksuid::from_str(id)
        .ok()
        .map(|k| k.timestamp_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        assert!(check_repo("my-repo-2").is_ok());
        for bad in ["", "a/b", "a_b", "a b", "..", "x.y"] {
            let e = check_repo(bad).unwrap_err().to_string();
            assert!(e.contains("invalid repo name"), "{e}");
        }
    }

    #[test]
    fn label_names() {
        assert!(check_label("v1_final-2").is_ok());
        assert!(check_label("a/b").is_err());
        assert!(check_label("").is_err());
    }

    #[test]
    fn bundle_ids_are_ksuids_that_sort_by_time() {
        let a = new_bundle_id();
        check_bundle_id(&a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = new_bundle_id();
        assert!(b > a, "{b} should sort after {a}");
        assert!(bundle_id_second(&b) > bundle_id_second(&a));
        assert_eq!(bundle_id_second("not-a-ksuid"), None);
        assert!(check_bundle_id("../../etc/passwd-aaaaaaaaaaa").is_err());
    }
}
