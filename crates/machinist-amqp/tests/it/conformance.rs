//! The shared conformance suite on RabbitMQ, one exchange and queue per scenario.

machinist_testkit::conformance_tests!(match crate::common::AmqpFactory::from_env() {
    Some(factory) => factory,
    None => return,
});
