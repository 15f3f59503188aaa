//! Workflow builders: [`Group`] (tasks run in parallel), [`Chord`] (a group plus a callback that
//! receives all results) and [`Chain`] (tasks run one after another, each receiving the previous
//! one's results). They only shape signatures the way Go's `NewGroup`, `NewChord` and `NewChain`
//! do — a chain is nested `OnSuccess` on the wire, a chord callback is copied into every member —
//! so Go and Rust workers can run each other's workflows.

use crate::id;
use crate::signature::Signature;

/// Tasks that run in parallel and share a `GroupUUID`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `group_<uuid4>`.
    pub group_uuid: String,
    /// The members, each with a task UUID, the group UUID and the group size.
    pub tasks: Vec<Signature>,
}

impl Group {
    /// A group of `tasks`: assigns missing task UUIDs and a new group UUID.
    pub fn new(tasks: Vec<Signature>) -> Self {
        let group_uuid = id::group_id();
        let count = i64::try_from(tasks.len()).unwrap_or(i64::MAX);
        let tasks = tasks
            .into_iter()
            .map(|mut t| {
                if t.uuid.is_empty() {
                    t.uuid = id::task_id();
                }
                t.group_uuid.clone_from(&group_uuid);
                t.group_task_count = count;
                t
            })
            .collect();
        Group { group_uuid, tasks }
    }

    /// The members' UUIDs in group order.
    pub fn task_uuids(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.uuid.clone()).collect()
    }
}

/// A group whose callback runs once, after every member succeeded, with all their results
/// (in group order) appended to its arguments unless it is immutable.
#[derive(Debug, Clone, PartialEq)]
pub struct Chord {
    /// The members.
    pub group: Group,
    /// The callback, with a `chord_<uuid4>` UUID.
    pub callback: Signature,
}

impl Chord {
    /// A chord: gives the callback a `chord_` UUID if it has none and copies it into every member.
    pub fn new(mut group: Group, mut callback: Signature) -> Self {
        if callback.uuid.is_empty() {
            callback.uuid = id::chord_id();
        }
        for t in &mut group.tasks {
            t.chord_callback = Some(Box::new(callback.clone()));
        }
        Chord { group, callback }
    }
}

/// Tasks that run one after another; each receives the previous one's results (unless the
/// previous one is immutable).
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The tasks in order; `tasks[i]` carries `tasks[i + 1..]` nested in `OnSuccess`.
    pub tasks: Vec<Signature>,
}

impl Chain {
    /// A chain of `tasks`: assigns missing UUIDs and nests each task in its predecessor's
    /// `OnSuccess` (replacing what was there, as Go does).
    pub fn new(tasks: Vec<Signature>) -> Self {
        let mut tasks: Vec<Signature> = tasks
            .into_iter()
            .map(|mut t| {
                if t.uuid.is_empty() {
                    t.uuid = id::task_id();
                }
                t
            })
            .collect();
        for i in (1..tasks.len()).rev() {
            let next = tasks[i].clone();
            tasks[i - 1].on_success = vec![next];
        }
        Chain { tasks }
    }

    /// The UUIDs in chain order.
    pub fn task_uuids(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.uuid.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_nests_on_success() {
        let chain = Chain::new(vec![
            Signature::new("a"),
            Signature::new("b"),
            Signature::new("c"),
        ]);
        let first = &chain.tasks[0];
        assert_eq!(first.on_success.len(), 1);
        assert_eq!(first.on_success[0].name, "b");
        assert_eq!(first.on_success[0].on_success[0].name, "c");
        assert_eq!(first.on_success[0].uuid, chain.tasks[1].uuid);
        assert!(chain.tasks[2].on_success.is_empty());
    }

    #[test]
    fn chord_copies_callback_into_members() {
        let group = Group::new(vec![Signature::new("a"), Signature::new("b")]);
        let chord = Chord::new(group, Signature::new("cb"));
        assert!(chord.callback.uuid.starts_with("chord_"));
        for t in &chord.group.tasks {
            assert!(t.uuid.starts_with("task_"));
            assert!(t.group_uuid.starts_with("group_"));
            assert_eq!(t.group_task_count, 2);
            assert_eq!(t.chord_callback.as_deref(), Some(&chord.callback));
        }
    }
}
