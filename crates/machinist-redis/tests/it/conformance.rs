//! The shared conformance suite on a spawned redis-server, over TCP and over a unix socket.

mod tcp {
    machinist_testkit::conformance_tests!(match crate::common::RedisFactory::tcp() {
        Some(factory) => factory,
        None => return,
    });
}

mod unix_socket {
    machinist_testkit::conformance_tests!(match crate::common::RedisFactory::unix() {
        Some(factory) => factory,
        None => return,
    });
}
