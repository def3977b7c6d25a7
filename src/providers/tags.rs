//! Tags: the one way every taggable kind brings AWS's tags to the manifest's.

use std::collections::BTreeMap;
use std::future::Future;

use super::Result;

/// Tags to set and tag keys to remove to go from `current` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChanges {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl TagChanges {
    pub fn between(current: &BTreeMap<String, String>, desired: &BTreeMap<String, String>) -> TagChanges {
        TagChanges {
            set: desired.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            remove: current.keys().filter(|k| !desired.contains_key(*k)).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Sends what changed: `tag` with the tags to set (if any), then `untag` with the keys to remove
    /// (if any). Nothing is sent when the tags already match.
    pub async fn apply<T, U>(self, tag: impl FnOnce(BTreeMap<String, String>) -> T, untag: impl FnOnce(Vec<String>) -> U) -> Result<()>
    where
        T: Future<Output = Result<()>>,
        U: Future<Output = Result<()>>,
    {
        if !self.set.is_empty() {
            tag(self.set).await?;
        }
        if !self.remove.is_empty() {
            untag(self.remove).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn sets_what_differs_and_removes_what_is_gone() {
        let cur = tags(&[("a", "1"), ("b", "2")]);
        let want = tags(&[("a", "1"), ("b", "3"), ("c", "4")]);
        let c = TagChanges::between(&cur, &want);
        assert_eq!(c.set, tags(&[("b", "3"), ("c", "4")]));
        assert!(c.remove.is_empty());
        let back = TagChanges::between(&want, &cur);
        assert_eq!(back.set, tags(&[("b", "2")]));
        assert_eq!(back.remove, vec!["c".to_string()]);
        assert!(TagChanges::between(&cur, &cur).is_empty());
    }

    #[tokio::test]
    async fn sends_nothing_when_tags_match() {
        let cur = tags(&[("a", "1")]);
        let calls = std::sync::Mutex::new(Vec::new());
        TagChanges::between(&cur, &cur)
            .apply(
                |_| async {
                    calls.lock().unwrap().push("tag");
                    Ok(())
                },
                |_| async {
                    calls.lock().unwrap().push("untag");
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty());
        TagChanges::between(&cur, &tags(&[("b", "2")]))
            .apply(
                |_| async {
                    calls.lock().unwrap().push("tag");
                    Ok(())
                },
                |_| async {
                    calls.lock().unwrap().push("untag");
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!(*calls.lock().unwrap(), vec!["tag", "untag"]);
    }
}
