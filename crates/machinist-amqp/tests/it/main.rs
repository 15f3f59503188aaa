//! Integration tests of machinist-amqp against a real RabbitMQ: the one at `AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/`), shared with other tests, so every test uses
//! its own exchange and queues; and, for the restart test, a private node the test starts and
//! stops itself (for the `amqps://` tests, feature `tls`, one with a TLS listener). When
//! RabbitMQ is not reachable each test prints "skipped: RabbitMQ not reachable" and passes.

mod bad_input;
mod common;
mod conformance;
mod delays;
mod interop;
mod other_broker;
mod restart;
mod shutdown;
mod throughput;
mod tls;
