//! AMQP results with another broker (issue 7): groups and chords complete when the AMQP
//! backend learns a member's group from the state write itself, not from an AMQP delivery.
//!
//! The producer and the worker are two `Server`s on one in-memory broker, each with its own
//! `AmqpBackend` connection, as two processes would be. The producer's backend stores no group
//! metadata, exactly as Go's AMQP backend (`InitGroup` stores nothing): so nothing in the
//! worker's process knows the group but the signature it runs. Go's AMQP group mechanism —
//! each member's final state also published to the group's queue — must still happen.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machinist_amqp::AmqpBackend;
use machinist_core::memory::{MemoryBroker, MemoryLock};
use machinist_core::{
    Backend, Chord, Group, GroupMeta, Result, Server, Signature, StateContext, TaskState,
};

use crate::common::{cleanup, config, options, poll_until, rabbit, unique, within};

/// A producer's backend as Go's: `InitGroup` stores nothing; everything else is AMQP's.
struct GoProducerBackend(AmqpBackend);

#[async_trait]
impl Backend for GoProducerBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        self.0.set_state(state).await
    }
    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        self.0.set_task_state(ctx, state).await
    }
    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        self.0.get_state(task_uuid).await
    }
    async fn init_group(&self, _group_uuid: &str, _task_uuids: &[String]) -> Result<()> {
        Ok(())
    }
    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        self.0.get_group(group_uuid).await
    }
    async fn group_states(&self, group_uuid: &str, count: usize) -> Result<Vec<TaskState>> {
        self.0.group_states(group_uuid, count).await
    }
    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        self.0.trigger_chord(group_uuid).await
    }
    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        self.0.purge_state(task_uuid).await
    }
    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        self.0.purge_group(group_uuid).await
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn close(&self) {
        self.0.close().await;
    }
}

/// A producer and a worker server on one memory broker, each with its own AMQP backend.
struct Pair {
    producer: Server,
    worker: Server,
    worker_backend: AmqpBackend,
    queue: String,
}

async fn pair(url: &str, ns: &str) -> Pair {
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let opts = options(url, ns, &cfg);
    let broker = Arc::new(MemoryBroker::new());
    let producer_backend =
        AmqpBackend::connect(opts.clone().with_connection_name(format!("{ns}_p")))
            .await
            .expect("producer backend connects");
    let worker_backend = AmqpBackend::connect(opts.with_connection_name(format!("{ns}_w")))
        .await
        .expect("worker backend connects");
    let producer = Server::new(
        cfg.clone(),
        broker.clone(),
        Arc::new(GoProducerBackend(producer_backend)),
        Arc::new(MemoryLock::new()),
    );
    let worker = Server::new(
        cfg,
        broker,
        Arc::new(worker_backend.clone()),
        Arc::new(MemoryLock::new()),
    );
    machinist_testkit::tasks::register_all(&worker);
    Pair {
        producer,
        worker,
        worker_backend,
        queue,
    }
}

fn adds(queue: &str, pairs: &[(i64, i64)]) -> Group {
    Group::new(
        pairs
            .iter()
            .map(|p| Signature::new("add").args(*p).routing_key(queue.to_owned()))
            .collect(),
    )
}

async fn cleanup_group(url: &str, ns: &str, group_uuid: &str, tasks: &[String]) {
    let mut queues = vec![
        group_uuid.to_owned(),
        machinist_amqp::group_meta_queue(group_uuid),
        machinist_amqp::chord_triggered_queue(group_uuid),
    ];
    queues.extend(tasks.iter().cloned());
    cleanup(url, &queues, &[format!("{ns}_ex")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_completes_with_amqp_results_and_a_memory_broker() {
    let Some(url) = rabbit() else { return };
    let ns = unique("other_group");
    let p = pair(&url, &ns).await;
    let handle = p.worker.new_worker("w", 3).launch_async();

    let group = adds(&p.queue, &[(1, 1), (2, 2), (5, 6)]);
    let group_uuid = group.group_uuid.clone();
    let members = group.task_uuids();
    let results = p.producer.send_group(group, 0).await.unwrap();
    for mut r in results {
        let _: i64 = within(20, "a member's result", r.results(Duration::from_secs(15)))
            .await
            .unwrap();
    }
    // Go's record of the group: the members' final states in the group's queue.
    poll_until(10, "the group complete in the AMQP backend", || async {
        p.worker_backend
            .group_completed(&group_uuid, 3)
            .await
            .ok()
            .filter(|done| *done)
    })
    .await;
    let states = p.worker_backend.group_states(&group_uuid, 3).await.unwrap();
    let mut seen: Vec<String> = states.iter().map(|s| s.task_uuid.clone()).collect();
    seen.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(states.iter().all(TaskState::is_success), "{states:?}");

    within(10, "quit", handle.quit()).await.unwrap();
    cleanup_group(&url, &ns, &group_uuid, &members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_completes_with_amqp_results_and_a_memory_broker() {
    let Some(url) = rabbit() else { return };
    let ns = unique("other_chord");
    let p = pair(&url, &ns).await;
    let handle = p.worker.new_worker("w", 3).launch_async();

    let group = adds(&p.queue, &[(1, 1), (2, 2), (5, 6)]);
    let group_uuid = group.group_uuid.clone();
    let mut tasks = group.task_uuids();
    let chord = Chord::new(
        group,
        Signature::new("multiply").routing_key(p.queue.clone()),
    );
    tasks.push(chord.callback.uuid.clone());
    let mut sent = p.producer.send_chord(chord, 0).await.unwrap();
    let v: i64 = within(
        25,
        "the chord callback",
        sent.callback.results(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert_eq!(v, 2 * 4 * 11);

    within(10, "quit", handle.quit()).await.unwrap();
    cleanup_group(&url, &ns, &group_uuid, &tasks).await;
}
