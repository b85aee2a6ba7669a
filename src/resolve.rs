//! Ref resolution: a ref is an exact ID, else an exact name, else an ID prefix of at least
//! three characters that matches exactly one snapshot. Pending snapshots never resolve.
//!
//! The rule is written once, over [`Refs`]: the parsed index answers it, and so does the
//! derived lookup table (`lookup`), which answers without reading the whole index.

use crate::error::{Error, Result};
use crate::index::Index;
use crate::types::SnapshotId;

/// The shortest ID prefix that resolves; shorter ones would match too much by accident.
pub(crate) const MIN_PREFIX: usize = 3;

/// What resolution asks of an index.
pub(crate) trait Refs {
    /// The ID of the complete record whose ID is exactly `id`.
    fn complete_id(&self, id: &str) -> Result<Option<SnapshotId>>;
    /// The ID `name` points at, when that record is complete.
    fn complete_named(&self, name: &str) -> Result<Option<SnapshotId>>;
    /// The IDs of complete records that start with `prefix`, in ID order.
    fn complete_with_prefix(&self, prefix: &str) -> Result<Vec<SnapshotId>>;
}

impl Refs for Index {
    fn complete_id(&self, id: &str) -> Result<Option<SnapshotId>> {
        Ok(Index::complete_id(self, id).cloned())
    }

    fn complete_named(&self, name: &str) -> Result<Option<SnapshotId>> {
        Ok(self
            .names
            .get(name)
            .filter(|id| self.is_complete(id.as_str()))
            .cloned())
    }

    fn complete_with_prefix(&self, prefix: &str) -> Result<Vec<SnapshotId>> {
        Ok(self
            .complete_ids_from(prefix)
            .take_while(|id| id.as_str().starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// The complete snapshot `reference` names.
///
/// # Errors
/// [`Error::NotFound`] when nothing matches; [`Error::Ambiguous`] when a prefix matches several;
/// what `index` fails with.
pub(crate) fn resolve(index: &impl Refs, reference: &str) -> Result<SnapshotId> {
    if let Some(id) = index.complete_id(reference)? {
        return Ok(id);
    }
    if let Some(id) = index.complete_named(reference)? {
        return Ok(id);
    }
    if reference.len() >= MIN_PREFIX {
        let mut matches = index.complete_with_prefix(reference)?;
        match matches.len() {
            0 => {}
            1 => return Ok(matches.remove(0)),
            _ => {
                return Err(Error::Ambiguous {
                    reference: reference.to_string(),
                    matches,
                });
            }
        }
    }
    Err(Error::NotFound {
        reference: reference.to_string(),
    })
}

/// Every ref resolved, duplicates dropped, in the order first named; fails on the first bad ref.
pub(crate) fn resolve_many<S: AsRef<str>>(
    index: &impl Refs,
    refs: &[S],
) -> Result<Vec<SnapshotId>> {
    let mut ids: Vec<SnapshotId> = Vec::with_capacity(refs.len());
    for reference in refs {
        let id = resolve(index, reference.as_ref())?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::Record;
    use proptest::prelude::*;

    /// An index of `entries`: (ID, name, pending).
    pub(crate) fn index(entries: &[(&str, &str, bool)]) -> Index {
        let mut index = Index::default();
        for (id, name, pending) in entries {
            let mut rec: Record =
                serde_json::from_str(r#"{"name":"","created_at":"2026-07-01T10:00:00Z"}"#).unwrap();
            rec.config.id = id.to_string();
            rec.config.name = name.to_string();
            rec.pending = *pending;
            index
                .insert(SnapshotId::try_from(id.to_string()).unwrap(), rec)
                .unwrap();
        }
        index
    }

    #[test]
    fn exact_id_then_name_then_prefix() {
        let idx = index(&[
            ("ABCDEF", "base", false),
            ("ABCXYZ", "ABCDEF2", false),
            ("QQQ777", "", false),
        ]);
        assert_eq!(resolve(&idx, "ABCDEF").unwrap().as_str(), "ABCDEF");
        assert_eq!(resolve(&idx, "base").unwrap().as_str(), "ABCDEF");
        assert_eq!(resolve(&idx, "ABCDEF2").unwrap().as_str(), "ABCXYZ");
        assert_eq!(resolve(&idx, "QQQ").unwrap().as_str(), "QQQ777");
        assert_eq!(resolve(&idx, "ABCX").unwrap().as_str(), "ABCXYZ");
    }

    #[test]
    fn ambiguous_prefix_is_an_error() {
        let idx = index(&[("ABCDEF", "", false), ("ABCXYZ", "", false)]);
        let err = resolve(&idx, "ABC").unwrap_err();
        assert!(matches!(&err, Error::Ambiguous { matches, .. } if matches.len() == 2));
        assert!(err.to_string().contains("ambiguous"), "{err}");
    }

    #[test]
    fn short_prefixes_and_pending_records_do_not_resolve() {
        let idx = index(&[("ABCDEF", "", false), ("PEND01", "pend", true)]);
        assert!(matches!(resolve(&idx, "AB"), Err(Error::NotFound { .. })));
        assert!(matches!(
            resolve(&idx, "PEND01"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(resolve(&idx, "pend"), Err(Error::NotFound { .. })));
        assert!(matches!(resolve(&idx, "PEN"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn resolving_many_deduplicates() {
        let idx = index(&[("ABCDEF", "base", false), ("QQQ777", "", false)]);
        let ids = resolve_many(&idx, &["base", "ABCDEF", "QQQ", "ABC"]).unwrap();
        let ids: Vec<&str> = ids.iter().map(SnapshotId::as_str).collect();
        assert_eq!(ids, ["ABCDEF", "QQQ777"]);
        assert!(resolve_many(&idx, &["base", "nope"]).is_err());
    }

    proptest! {
        /// Whatever the IDs, a ref resolves to an ID it is equal to, the name of, or the only
        /// ID it prefixes; and an error is exactly the case where none of that holds.
        #[test]
        fn resolution_agrees_with_its_definition(
            ids in proptest::collection::btree_set("[A-D2-3]{3,6}", 1..8),
            reference in "[A-D2-3]{1,6}",
        ) {
            let entries: Vec<(String, String)> = ids.iter().enumerate()
                .map(|(i, id)| (id.clone(), format!("n{i}"))).collect();
            let borrowed: Vec<(&str, &str, bool)> =
                entries.iter().map(|(a, b)| (a.as_str(), b.as_str(), false)).collect();
            let idx = index(&borrowed);
            let prefixed: Vec<&String> = ids.iter().filter(|id| id.starts_with(&reference)).collect();
            match resolve(&idx, &reference) {
                Ok(id) if ids.contains(&reference) => prop_assert_eq!(id.as_str(), reference.as_str()),
                Ok(id) => {
                    prop_assert!(reference.len() >= MIN_PREFIX);
                    prop_assert_eq!(prefixed.len(), 1);
                    prop_assert_eq!(id.as_str(), prefixed[0].as_str());
                }
                Err(Error::Ambiguous { matches, .. }) => {
                    prop_assert!(reference.len() >= MIN_PREFIX);
                    prop_assert_eq!(matches.len(), prefixed.len());
                }
                Err(_) => prop_assert!(!ids.contains(&reference)
                    && (reference.len() < MIN_PREFIX || prefixed.is_empty())),
            }
        }
    }
}
