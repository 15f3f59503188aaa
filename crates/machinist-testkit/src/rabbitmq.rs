//! The shared RabbitMQ the AMQP tests of every crate use: where it is (`AMQP_URL`, default the
//! local guest account) and whether it answers. Tests isolate themselves by exchange and queue
//! names, never by purging what others may use.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The default `AMQP_URL`: RabbitMQ's guest account on the loopback interface.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/";

/// `AMQP_URL`, or [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `host:port` of an AMQP URL (port 5672 when it names none).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}

/// The URL of the tests' RabbitMQ when something listens there. Otherwise prints
/// `skipped: RabbitMQ not reachable` and returns `None` (the caller returns, passing), unless
/// `MACHINIST_REQUIRE_SERVERS` is set — the project's test script sets it once it has installed
/// and started RabbitMQ — where the missing server fails the test.
pub fn reachable() -> Option<String> {
    let url = url();
    let up = host_port(&url)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    if up {
        return Some(url);
    }
    crate::redis_server::require_servers("RabbitMQ (AMQP_URL)");
    println!("skipped: RabbitMQ not reachable");
    None
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("amqp://u:p@h:1/vh"), "h:1");
        assert_eq!(host_port("amqps://h/"), "h:5672");
        assert_eq!(host_port("amqp://p@ss@h:2"), "h:2");
    }
}
