//! Real signals: a worker launched with signal handling stops gracefully on the first SIGTERM
//! (the running task finishes) and aborts on a second one (the running task's message goes back
//! to the broker). One test function, because signals reach the whole test process.

use std::sync::Arc;
use std::time::Duration;

use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::{Config, Server, Signature, State, Stopped, TaskContext};

fn kill(signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

async fn wait_for_state(server: &Server, uuid: &str, state: State) {
    for _ in 0..500 {
        if let Some(s) = server.backend().get_state(uuid).await.expect("get")
            && s.state == state
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{uuid} never reached {state}");
}

async fn sleepy(ctx: TaskContext, ms: u64) -> Result<String, machinist_core::TaskError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok("done".to_owned()),
        _ = ctx.cancellation().cancelled() => Err(machinist_core::TaskError::fatal("cancelled")),
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_second_signal_aborts() {
    let config = Config {
        default_queue: "signals_tasks".into(),
        no_unix_signals: false,
        ..Config::default()
    };
    let broker = MemoryBroker::new();
    let server = Server::new(
        config.clone(),
        Arc::new(broker.clone()),
        Arc::new(MemoryBackend::new(config.results_ttl())),
        Arc::new(MemoryLock::new()),
    );
    server.register_task("sleepy", sleepy);

    // First signal: the running task completes, the worker reports a graceful stop.
    let worker = server.new_worker("signals", 2).launch_async();
    let mut r = server
        .send_task(Signature::new("sleepy").args(400u64))
        .await
        .expect("send");
    wait_for_state(&server, r.uuid(), State::Started).await;
    kill("TERM");
    let stopped = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("worker stops")
        .expect("no error");
    assert_eq!(stopped, Stopped::Gracefully);
    let state = r.get_state().await.expect("state").expect("stored");
    assert_eq!(state.state, State::Success);

    // Two signals: the running task is interrupted and its message returned to the queue.
    let worker = server.new_worker("signals", 2).launch_async();
    let r = server
        .send_task(Signature::new("sleepy").args(60_000u64))
        .await
        .expect("send");
    wait_for_state(&server, r.uuid(), State::Started).await;
    kill("INT");
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill("INT");
    let stopped = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("worker stops")
        .expect("no error");
    assert_eq!(stopped, Stopped::Abruptly);
    assert_eq!(
        broker.len("signals_tasks"),
        1,
        "message returned to the queue"
    );
    assert_eq!(broker.in_flight(), 0);
}
