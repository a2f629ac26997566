//! Which workloads a policy's selector can match, found without trying every (policy,
//! workload) pair: the loader asks it for every policy (does it select anything?) and
//! [`crate::CompiledPolicies`] for every registry entry (which policies apply?), and with
//! thousands of both the pairs are millions.
//!
//! A selector matches a workload only if the workload carries every one of its labels, so
//! in particular its first one: [`LabelIndex`] files each selector under its first label and
//! each workload's labels are looked up there. What it returns are candidates, in order; the
//! caller still checks the whole selector (and the namespace).

use std::collections::{BTreeMap, HashMap};

/// Items (policies or workloads) filed by namespace and one `key=value` label; items
/// without a label (no selector) under the namespace alone.
#[derive(Debug, Default)]
pub(crate) struct LabelIndex<'a> {
    /// Namespace → key → value → items.
    by_label: HashMap<&'a str, HashMap<&'a str, HashMap<&'a str, Vec<usize>>>>,
    unlabelled: HashMap<&'a str, Vec<usize>>,
}

impl<'a> LabelIndex<'a> {
    /// Files item `i` of `namespace` under its first label (a selector's first `matchLabels`
    /// pair), or as unlabelled when it has none.
    pub fn file_first(
        &mut self,
        i: usize,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) {
        match labels.iter().next() {
            Some((k, v)) => self.file(i, namespace, k, v),
            None => self.unlabelled.entry(namespace).or_default().push(i),
        }
    }

    /// Files item `i` of `namespace` under every one of its labels (a workload).
    pub fn file_all(&mut self, i: usize, namespace: &'a str, labels: &'a BTreeMap<String, String>) {
        for (k, v) in labels {
            self.file(i, namespace, k, v);
        }
    }

    fn file(&mut self, i: usize, namespace: &'a str, key: &'a str, value: &'a str) {
        self.by_label
            .entry(namespace)
            .or_default()
            .entry(key)
            .or_default()
            .entry(value)
            .or_default()
            .push(i);
    }

    /// Items filed in `namespace` under one of `labels`, and its unlabelled ones: sorted,
    /// each once.
    pub fn candidates(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let mut out: Vec<usize> = self.unlabelled.get(namespace).cloned().unwrap_or_default();
        for (k, v) in labels {
            out.extend_from_slice(self.under(namespace, k, v));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Items filed in `namespace` under the label `key=value`.
    pub fn under(&self, namespace: &str, key: &str, value: &str) -> &[usize] {
        self.by_label
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .and_then(|values| values.get(value))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_workload_finds_the_selectors_filed_under_its_labels_and_the_unlabelled_ones() {
        let (a, b, none, other) = (
            labels(&[("app", "a"), ("tier", "x")]),
            labels(&[("app", "b")]),
            labels(&[]),
            labels(&[("app", "a")]),
        );
        let mut index = LabelIndex::default();
        index.file_first(0, "ns", &a);
        index.file_first(1, "ns", &b);
        index.file_first(2, "ns", &none);
        index.file_first(3, "other", &other);
        // Filed under app=a; the caller checks tier=x.
        assert_eq!(index.candidates("ns", &labels(&[("app", "a")])), [0, 2]);
        assert_eq!(
            index.candidates("ns", &labels(&[("app", "b"), ("x", "y")])),
            [1, 2]
        );
        assert_eq!(index.candidates("other", &labels(&[("app", "a")])), [3]);
        assert!(index
            .candidates("empty", &labels(&[("app", "a")]))
            .is_empty());

        let mut workloads = LabelIndex::default();
        workloads.file_all(7, "ns", &a);
        assert_eq!(workloads.under("ns", "tier", "x"), [7]);
        assert!(workloads.under("ns", "tier", "y").is_empty());
    }
}
