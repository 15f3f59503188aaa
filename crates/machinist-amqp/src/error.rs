//! [`AmqpError`]: what goes wrong in this crate, with enough context to act on. It reaches
//! machinist's callers wrapped in [`machinist_core::Error`] (`Broker` or `Backend`, by the
//! adapter that failed), or as `Config` for bad settings.

use std::time::Duration;

use lapin::ErrorKind;
use lapin::protocol::AMQPErrorKind;

/// An error of the AMQP adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// Bad settings or URL.
    #[error("{0}")]
    Config(String),
    /// No URL of the list could be connected to; one entry per URL tried.
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(String),
    /// RabbitMQ refused an operation and closed the channel with a reply code: 404 NOT_FOUND
    /// (no such queue or exchange), 405 RESOURCE_LOCKED (an exclusive queue of another
    /// connection), 406 PRECONDITION_FAILED (a queue or exchange that exists with other flags or
    /// arguments) …
    #[error("{what}: RabbitMQ refused it ({code} {text})")]
    Refused {
        /// What machinist was doing.
        what: String,
        /// The AMQP reply code.
        code: u16,
        /// RabbitMQ's reply text.
        text: String,
    },
    /// A message is larger than RabbitMQ accepts (`max_message_size`, 128 MiB by default).
    #[error("{what}: the message of {size} bytes is larger than RabbitMQ's maximum of {max} bytes")]
    TooLarge {
        /// What machinist was doing.
        what: String,
        /// Size of the body.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// RabbitMQ answered a publish with `basic.nack`: it could not take the message.
    #[error("{what}: RabbitMQ did not accept the message (basic.nack)")]
    Nacked {
        /// What machinist was doing.
        what: String,
    },
    /// A published message matched no queue and came back (`basic.return`).
    #[error("{what}: no queue is bound to routing key {routing_key:?} on exchange {exchange:?}")]
    Unroutable {
        /// What machinist was doing.
        what: String,
        /// The exchange published to.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// The connection or channel failed (I/O, heartbeat, server shutting down …).
    #[error("{what}: {source}")]
    Amqp {
        /// What machinist was doing.
        what: String,
        /// The lapin error.
        #[source]
        source: lapin::Error,
    },
    /// A stored value is not what Go Machinery or machinist writes there.
    #[error("{what}: {detail}")]
    Corrupt {
        /// What machinist was doing.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// An operation did not finish in time.
    #[error("{what}: no answer from RabbitMQ within {after:?}")]
    Timeout {
        /// What machinist was doing.
        what: String,
        /// The bound.
        after: Duration,
    },
}

impl AmqpError {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        AmqpError::Config(msg.into())
    }

    /// Wraps a lapin error; a reply code from the server becomes [`AmqpError::Refused`] (or
    /// [`AmqpError::TooLarge`] for RabbitMQ's message-size refusal).
    pub(crate) fn amqp(what: impl Into<String>, source: lapin::Error) -> Self {
        let what = what.into();
        if let ErrorKind::ProtocolError(e) = source.kind()
            && matches!(e.kind(), AMQPErrorKind::Soft(_))
        {
            let text = e.get_message().as_str().to_owned();
            if let Some((size, max)) = parse_too_large(&text) {
                return AmqpError::TooLarge { what, size, max };
            }
            return AmqpError::Refused {
                what,
                code: e.get_id(),
                text,
            };
        }
        AmqpError::Amqp { what, source }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        AmqpError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// The AMQP reply code when RabbitMQ refused the operation.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            AmqpError::Refused { code, .. } => Some(*code),
            AmqpError::TooLarge { .. } => Some(406),
            _ => None,
        }
    }

    /// True for 404 NOT_FOUND (no such queue or exchange).
    pub fn is_not_found(&self) -> bool {
        self.reply_code() == Some(404)
    }

    /// True when the error means "RabbitMQ is unreachable, restarting or dropped us" rather than
    /// "this operation is wrong": the cases a worker rides out by reconnecting.
    pub fn is_outage(&self) -> bool {
        match self {
            AmqpError::Connect(_) | AmqpError::Timeout { .. } => true,
            AmqpError::Amqp { source, .. } => is_outage(source),
            _ => false,
        }
    }

    /// True when trying again on a fresh channel or connection may succeed: outages, and a
    /// channel that another operation's error closed under us.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            AmqpError::Amqp { source, .. } => !matches!(
                source.kind(),
                ErrorKind::ParsingError(_)
                    | ErrorKind::SerialisationError(_)
                    | ErrorKind::AuthProviderError(_)
                    | ErrorKind::InvalidProtocolVersion(_)
                    | ErrorKind::NoDefaultRuntime
            ),
            e => e.is_outage(),
        }
    }

    pub(crate) fn into_broker(self) -> machinist_core::Error {
        match self {
            AmqpError::Config(msg) => machinist_core::Error::Config(msg),
            e => machinist_core::Error::broker(e),
        }
    }

    pub(crate) fn into_backend(self) -> machinist_core::Error {
        match self {
            AmqpError::Config(msg) => machinist_core::Error::Config(msg),
            e => machinist_core::Error::backend(e),
        }
    }
}

/// Connection-level failures: I/O, a closed or broken connection, a missed heartbeat, or a
/// hard AMQP error (320 CONNECTION_FORCED when RabbitMQ shuts down or an operator closes us).
fn is_outage(e: &lapin::Error) -> bool {
    match e.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::MissingHeartbeatError
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_) => true,
        ErrorKind::ProtocolError(p) => matches!(p.kind(), AMQPErrorKind::Hard(_)),
        _ => false,
    }
}

/// RabbitMQ's refusal of a message over `max_message_size`: "message size 314572800 is larger
/// than configured max size 134217728".
fn parse_too_large(text: &str) -> Option<(usize, usize)> {
    let rest = text.split("message size ").nth(1)?;
    let mut words = rest.split_whitespace();
    let size = words.next()?.parse().ok()?;
    let max = rest
        .split("max size ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((size, max))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_size_refusal() {
        assert_eq!(
            parse_too_large(
                "PRECONDITION_FAILED - message size 314572800 is larger than configured max size 134217728"
            ),
            Some((314_572_800, 134_217_728))
        );
        assert_eq!(
            parse_too_large("PRECONDITION_FAILED - inequivalent arg"),
            None
        );
    }
}
