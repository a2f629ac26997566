//! The stub's etcd: every object by type, namespace and name; one global `resourceVersion`
//! that every write increments; the history of writes (for watches and paged lists from an
//! older version) back to a compaction point; and the open watches, each fed under the same
//! lock as the write, so a watch from version `N` sees every later write exactly once, in order.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::object;
use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// An object's place within its type: `(namespace or "", name)`, in the order lists return.
pub type Key = (String, String);

/// What a write did, as watch events name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

/// One write in the history.
#[derive(Clone, Debug)]
pub(super) struct Write {
    pub(super) rv: u64,
    pub(super) resource: Resource,
    pub(super) key: Key,
    pub(super) change: Change,
    /// The object after the write (for a delete: its last state, at the delete's version).
    pub(super) object: Value,
    /// The object before the write.
    pub(super) prev: Option<Value>,
}

/// Which objects a list or watch is about.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The type.
    pub resource: Resource,
    /// `Some`: that namespace only.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether an object of this filter's type, at `key`, is selected.
    pub fn matches(&self, key: &Key, obj: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == key.0)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

struct Watcher {
    id: u64,
    filter: Filter,
    bookmarks: bool,
    tx: UnboundedSender<Bytes>,
}

/// The objects, their history and the open watches.
pub struct Store {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Resource, BTreeMap<Key, Value>>,
    pub(super) history: VecDeque<Write>,
    /// Every write after this version is in `history`.
    pub(super) oldest: u64,
    max_history: usize,
    watchers: Vec<Watcher>,
    next_id: u64,
}

/// One line of a watch stream.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

impl Store {
    /// An empty store at version 1 keeping at most `max_history` writes.
    pub fn new(max_history: usize) -> Self {
        Self {
            rv: 1,
            objects: Resource::ALL
                .into_iter()
                .map(|r| (r, BTreeMap::new()))
                .collect(),
            history: VecDeque::new(),
            oldest: 1,
            max_history,
            watchers: Vec::new(),
            next_id: 1,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A fresh suffix for `generateName` and `uid`s.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The stored object, if any.
    pub fn get(&self, resource: Resource, key: &Key) -> Option<&Value> {
        self.objects.get(&resource).and_then(|m| m.get(key))
    }

    /// How many objects of a type exist.
    pub fn count(&self, resource: Resource) -> usize {
        self.objects.get(&resource).map_or(0, BTreeMap::len)
    }

    /// Writes `new` (or deletes, for `None`) at the next resourceVersion, records it and tells
    /// the open watches. Returns the object as written, or `None` for a no-op (deleting
    /// nothing, or an update that changes nothing — as in the real server, no new version).
    pub fn write(&mut self, resource: Resource, key: Key, new: Option<Value>) -> Option<Value> {
        let map = self.objects.entry(resource).or_default();
        let prev = map.get(&key).cloned();
        let (change, mut object) = match (new, &prev) {
            (None, None) => return None,
            (None, Some(p)) => (Change::Deleted, p.clone()),
            (Some(n), None) => (Change::Added, n),
            (Some(n), Some(p)) => {
                let mut unversioned = p.clone();
                if let Ok(meta) = object::metadata_mut(&mut unversioned) {
                    meta.remove("resourceVersion");
                }
                if unversioned == n {
                    return Some(p.clone());
                }
                (Change::Modified, n)
            }
        };
        self.rv += 1;
        object::set_resource_version(&mut object, self.rv);
        if change == Change::Deleted {
            map.remove(&key);
        } else {
            map.insert(key.clone(), object.clone());
        }
        let write = Write {
            rv: self.rv,
            resource,
            key,
            change,
            object: object.clone(),
            prev,
        };
        self.watchers
            .retain(|w| match watch_event(&w.filter, &write) {
                Some((kind, obj)) => w.tx.send(event_line(kind, obj)).is_ok(),
                None => !w.tx.is_closed(),
            });
        self.history.push_back(write);
        while self.history.len() > self.max_history {
            if let Some(w) = self.history.pop_front() {
                self.oldest = w.rv;
            }
        }
        Some(object)
    }

    /// Forgets the history up to now: lists and watches from any older version get `410`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    /// `410 Expired` unless every write after `rv` is still in the history.
    pub fn check_retained(&self, rv: u64) -> Result<(), ApiError> {
        if rv < self.oldest {
            Err(ApiError::Gone {
                requested: rv,
                oldest: self.oldest,
            })
        } else {
            Ok(())
        }
    }

    /// Opens a watch: from `from` (every later write), or, for `None`, from a synthetic
    /// `ADDED` of every selected object (the API's `resourceVersion=0`/unset watch). With
    /// `initial_events` (`sendInitialEvents=true`) the `ADDED`s end with the bookmark annotated
    /// `k8s.io/initial-events-end`. Returns the watch's id, or `410` for a compacted `from`.
    pub fn watch(
        &mut self,
        filter: Filter,
        from: Option<u64>,
        bookmarks: bool,
        initial_events: bool,
        tx: UnboundedSender<Bytes>,
    ) -> Result<u64, ApiError> {
        match from {
            Some(rv) if !initial_events => {
                self.check_retained(rv)?;
                for write in self.history.iter().filter(|w| w.rv > rv) {
                    if let Some((kind, obj)) = watch_event(&filter, write) {
                        let _ = tx.send(event_line(kind, obj));
                    }
                }
            }
            _ => {
                let objects = self.objects.get(&filter.resource).into_iter().flatten();
                for (_, obj) in objects.filter(|(k, o)| filter.matches(k, o)) {
                    let _ = tx.send(event_line("ADDED", obj));
                }
                if initial_events {
                    let mut mark = bookmark(filter.resource, self.rv);
                    mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    let _ = tx.send(event_line("BOOKMARK", &mark));
                }
            }
        }
        let id = self.next_id();
        self.watchers.push(Watcher {
            id,
            filter,
            bookmarks,
            tx,
        });
        Ok(id)
    }

    /// Ends one watch (its stream ends).
    pub fn unwatch(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Ends every open watch, as an API server restart or a dropped connection would.
    pub fn cut_watches(&mut self) -> usize {
        let n = self.watchers.len();
        self.watchers.clear();
        n
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.watchers.iter().filter(|w| !w.tx.is_closed()).count()
    }

    /// Sends a `BOOKMARK` at the current version on every watch that allowed bookmarks.
    pub fn send_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(event_line("BOOKMARK", &bookmark(w.filter.resource, rv)))
                    .is_ok()
        });
    }
}

/// A bookmark object: the type and the version, nothing else (as the real server sends it).
fn bookmark(resource: Resource, rv: u64) -> Value {
    json!({
        "kind": resource.kind(),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    })
}

/// The event a watch with `filter` gets for `write`: an object that starts to match a selector
/// is `ADDED`, one that stops matching is `DELETED` (with its new state), as in the real server.
pub(super) fn watch_event<'w>(
    filter: &Filter,
    write: &'w Write,
) -> Option<(&'static str, &'w Value)> {
    if filter.resource != write.resource {
        return None;
    }
    let before = write
        .prev
        .as_ref()
        .is_some_and(|p| filter.matches(&write.key, p));
    let after = write.change != Change::Deleted && filter.matches(&write.key, &write.object);
    match (before, after) {
        (false, true) => Some(("ADDED", &write.object)),
        (true, true) => Some(("MODIFIED", &write.object)),
        (true, false) => Some(("DELETED", &write.object)),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(labels: &str) -> Filter {
        Filter {
            resource: Resource::ConfigMaps,
            namespace: Some("a".into()),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
        }
    }

    fn cm(labels: Value) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a", "labels": labels}})
    }

    fn key() -> Key {
        ("a".into(), "c".into())
    }

    #[test]
    fn a_write_that_changes_nothing_makes_no_version() {
        let mut store = Store::new(10);
        store.write(Resource::ConfigMaps, key(), Some(cm(json!({}))));
        let rv = store.resource_version();
        store.write(Resource::ConfigMaps, key(), Some(cm(json!({}))));
        assert_eq!(store.resource_version(), rv);
        store.write(Resource::ConfigMaps, key(), Some(cm(json!({"x": "1"}))));
        assert_eq!(store.resource_version(), rv + 1);
        assert_eq!(
            store.write(Resource::ConfigMaps, ("a".into(), "nope".into()), None),
            None
        );
    }

    #[test]
    fn watches_replay_history_and_see_objects_leave_their_selector() {
        let mut store = Store::new(10);
        let start = store.resource_version();
        store.write(Resource::ConfigMaps, key(), Some(cm(json!({"app": "web"}))));
        store.write(Resource::ConfigMaps, key(), Some(cm(json!({"app": "db"}))));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        store
            .watch(filter("app=web"), Some(start), false, false, tx)
            .unwrap();
        let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| {
                serde_json::from_slice::<Value>(&l).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, ["ADDED", "DELETED"]);
        // Only a history too short to cover the version is refused.
        let mut small = Store::new(1);
        small.write(Resource::ConfigMaps, key(), Some(cm(json!({}))));
        small.write(Resource::ConfigMaps, key(), None);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let err = small
            .watch(filter(""), Some(start), false, false, tx.clone())
            .unwrap_err();
        assert_eq!(err.code(), 410);
        assert!(small
            .watch(filter(""), Some(start + 1), false, false, tx)
            .is_ok());
    }
}
