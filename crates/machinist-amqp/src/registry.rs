//! Which group a task belongs to, as far as this process knows.
//!
//! Go's AMQP backend publishes a group member's final state to the group's queue as well
//! (`SetStateSuccess`/`SetStateFailure` get the whole signature). The worker writes through
//! [`Backend::set_task_state`](machinist_core::Backend::set_task_state), whose context names
//! the group: that is what the backend uses. A bare
//! [`Backend::set_state`](machinist_core::Backend::set_state) gets only the state (callers
//! driving the backend directly), so for it the backend looks the group up here. Two sources
//! fill it, both in-process:
//!
//! * the [`AmqpBroker`](crate::AmqpBroker)'s consumers, for every delivery that carries a
//!   `GroupUUID` (whoever produced it, Go or machinist), until the delivery is settled;
//! * [`AmqpBackend::init_group`](crate::AmqpBackend), for the members of groups sent from this
//!   process (so a producer that also stores its members' states, and tests that drive the
//!   backend directly, work). These entries are bounded (oldest dropped first).
//!
//! The map is process-wide on purpose: the broker and the backend are built separately (from
//! two URLs) and only meet here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// The most `init_group` members remembered.
const ANNOUNCED_MAX: usize = 100_000;

#[derive(Debug)]
struct Entry {
    group: String,
    /// Deliveries of this task currently held, by token.
    deliveries: Vec<u64>,
    /// Set by `init_group`.
    announced: bool,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Entry>,
    announced: VecDeque<String>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
static TOKENS: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A delivery of `task` (member of `group`) is held; returns the token to forget it with.
pub(crate) fn hold(task: &str, group: &str) -> u64 {
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    let mut r = registry();
    let entry = r.tasks.entry(task.to_owned()).or_insert_with(|| Entry {
        group: group.to_owned(),
        deliveries: Vec::new(),
        announced: false,
    });
    group.clone_into(&mut entry.group);
    entry.deliveries.push(token);
    token
}

/// The delivery `token` of `task` was settled.
pub(crate) fn release(task: &str, token: u64) {
    let mut r = registry();
    if let Some(entry) = r.tasks.get_mut(task) {
        entry.deliveries.retain(|t| *t != token);
        if entry.deliveries.is_empty() && !entry.announced {
            r.tasks.remove(task);
        }
    }
}

/// `init_group` in this process: remember the members' group.
pub(crate) fn announce(group: &str, members: &[String]) {
    let mut r = registry();
    for m in members {
        let entry = r.tasks.entry(m.clone()).or_insert_with(|| Entry {
            group: group.to_owned(),
            deliveries: Vec::new(),
            announced: false,
        });
        if !entry.announced {
            entry.announced = true;
            r.announced.push_back(m.clone());
        }
    }
    while r.announced.len() > ANNOUNCED_MAX {
        let Some(old) = r.announced.pop_front() else {
            break;
        };
        if let Some(entry) = r.tasks.get_mut(&old) {
            entry.announced = false;
            if entry.deliveries.is_empty() {
                r.tasks.remove(&old);
            }
        }
    }
}

/// The group of `task`, if this process knows it.
pub(crate) fn group_of(task: &str) -> Option<String> {
    registry().tasks.get(task).map(|e| e.group.clone())
}

/// What of a message body tells its group: `UUID`, `GroupUUID`, `GroupTaskCount`.
#[derive(serde::Deserialize)]
struct GroupFields {
    #[serde(rename = "UUID", default)]
    uuid: Option<String>,
    #[serde(rename = "GroupUUID", default)]
    group_uuid: Option<String>,
    #[serde(rename = "GroupTaskCount", default)]
    group_task_count: Option<serde_json::Value>,
}

/// `(task UUID, group UUID)` of a message that is a member of a group. The top-level keys
/// are read (nested callbacks carry their own, usually empty, `GroupUUID`).
///
/// Called for every delivery, and Go writes `"GroupUUID":""` into every message: the body is
/// parsed only when some `GroupUUID` in it is not that empty string (a byte scan; decoding the
/// whole message cost ~15,000 instructions a delivery).
pub(crate) fn membership(body: &[u8]) -> Option<(String, String)> {
    if !names_a_group(body) {
        return None;
    }
    let f: GroupFields = serde_json::from_slice(body).ok()?;
    let uuid = f.uuid.filter(|u| !u.is_empty())?;
    let group = f.group_uuid.filter(|g| !g.is_empty())?;
    // Go only records completion for members of groups with a count (markTaskCompleted).
    let count = f
        .group_task_count
        .as_ref()
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    (count > 0).then_some((uuid, group))
}

/// False when every `"GroupUUID"` key of `body` (at any depth) has the value `""`, or there is
/// none; true otherwise, and when unsure (anything but `""` after the key and its colon, spaces
/// allowed).
fn names_a_group(body: &[u8]) -> bool {
    const KEY: &str = "\"GroupUUID\"";
    // `str::find` searches with SIMD; messages are UTF-8 JSON (anything else: look anyway).
    let Ok(text) = std::str::from_utf8(body) else {
        return true;
    };
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let Some(after) = skip_spaces(rest.as_bytes()).strip_prefix(b":") else {
            // A value "GroupUUID" (not a key): keep looking.
            continue;
        };
        if !skip_spaces(after).starts_with(b"\"\"") {
            return true;
        }
    }
    false
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_read_from_bodies() {
        assert_eq!(
            membership(br#"{"UUID":"task_1","GroupUUID":"","GroupTaskCount":0}"#),
            None
        );
        assert_eq!(
            membership(br#"{"UUID":"task_1","GroupUUID":"group_9","GroupTaskCount":3}"#),
            Some(("task_1".into(), "group_9".into()))
        );
        assert_eq!(
            membership(br#"{"UUID":"task_1","GroupUUID":"group_9","GroupTaskCount":0}"#),
            None
        );
        assert_eq!(membership(b"garbage GroupUUID"), None);
        assert_eq!(membership(br#"{"UUID":"task_1","GroupUUID":"#), None);
        // Spaced out (not Go's writing), or an escaped value: read properly.
        assert_eq!(
            membership(br#"{"UUID": "task_1", "GroupUUID" : "group_9", "GroupTaskCount": 3}"#),
            Some(("task_1".into(), "group_9".into()))
        );
        assert_eq!(
            membership(br#"{"UUID":"task_1","GroupUUID":"g1","GroupTaskCount":3}"#),
            Some(("task_1".into(), "g1".into()))
        );
        // A callback's non-empty GroupUUID makes it look, but the top level decides.
        assert_eq!(
            membership(
                br#"{"UUID":"task_3","GroupUUID":"","GroupTaskCount":0,"OnSuccess":[{"UUID":"cb","GroupUUID":"group_5","GroupTaskCount":2}]}"#
            ),
            None
        );
        assert!(!names_a_group(br#"{"Name":"GroupUUID","GroupUUID": "" }"#));
        assert!(names_a_group(br#"{"GroupUUID":null}"#));
        // A chord member: its callback, nested, has an empty GroupUUID of its own.
        assert_eq!(
            membership(
                br#"{"UUID":"task_2","GroupUUID":"group_7","GroupTaskCount":2,"ChordCallback":{"UUID":"chord_1","GroupUUID":"","GroupTaskCount":0}}"#
            ),
            Some(("task_2".into(), "group_7".into()))
        );
    }

    #[test]
    fn held_deliveries_and_announced_groups() {
        let t = hold("task_reg_a", "group_reg");
        assert_eq!(group_of("task_reg_a").as_deref(), Some("group_reg"));
        release("task_reg_a", t);
        assert_eq!(group_of("task_reg_a"), None);
        announce("group_reg2", &["task_reg_b".to_owned()]);
        let t = hold("task_reg_b", "group_reg2");
        release("task_reg_b", t);
        assert_eq!(group_of("task_reg_b").as_deref(), Some("group_reg2"));
    }
}
