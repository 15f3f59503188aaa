//! Redaction of connection URLs before they reach logs and errors.

/// Reduces a connection URL to `scheme://host[:port]`, so it can be logged.
///
/// User names, passwords, paths (database numbers, vhosts, queue paths), queries and fragments
/// are dropped. Multi-host forms keep their host list (`redis://pw@h1:1,h2:2/0` →
/// `redis://h1:1,h2:2`). File-based URLs keep only the file name (`sqlite:///var/lib/m.db` →
/// `sqlite://m.db`, `redis+socket://pw@/run/redis.sock` → `redis+socket://redis.sock`).
/// Strings without `://` (`eager`, `memory`, `h1:11211,h2:11211`) are kept, minus anything up
/// to an `@` and from a `/`, `?` or `#`. When a URL is ambiguous (an `@` after the first `/`,
/// `?` or `#`, which happens when a password holds one of those characters) or its host
/// holds unexpected characters, the host is replaced by `***`: over-redacting beats leaking.
///
/// ```
/// use machinist_core::config::redact_url;
///
/// assert_eq!(redact_url("amqp://guest:guest@localhost:5672/"), "amqp://localhost:5672");
/// assert_eq!(redact_url("redis://:secret@h1:6379,h2:6380/0"), "redis://h1:6379,h2:6380");
/// assert_eq!(redact_url("https://sqs.us-east-1.amazonaws.com/123/q"), "https://sqs.us-east-1.amazonaws.com");
/// assert_eq!(redact_url("eager"), "eager");
/// ```
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.find("://") {
        Some(i) => (Some(&url[..i]), &url[i + 3..]),
        None => (None, url),
    };
    let prefix = match scheme {
        Some(s) if is_scheme(s) => format!("{s}://"),
        Some(_) => return "***".to_owned(),
        None => String::new(),
    };
    let file_based = scheme.is_some_and(|s| {
        let s = s.to_ascii_lowercase();
        s == "sqlite" || s == "file" || s == "unix" || s.ends_with("+socket")
    });

    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let after = &rest[authority_end..];
    let host = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        // An `@` later on: a password holding `/`, `?` or `#` would put the real userinfo
        // there, so the "authority" could be part of a password.
        None if after.contains('@') => return format!("{prefix}***"),
        None => authority,
    };

    if file_based {
        let path = after.split(['?', '#']).next().unwrap_or("");
        // Go's socket form ends with `:/db`.
        let path = path.rsplit_once(":/").map_or(path, |(p, _)| p);
        let name = path.rsplit('/').next().unwrap_or("");
        let shown = if host.is_empty() { name } else { host };
        return if is_hostlike(shown) {
            format!("{prefix}{shown}")
        } else {
            format!("{prefix}***")
        };
    }
    if is_hostlike(host) {
        format!("{prefix}{host}")
    } else {
        format!("{prefix}***")
    }
}

/// Replaces every URL (a whitespace- or quote-delimited token containing `://`) in `text` by
/// its [`redact_url`] form. Used on messages from other libraries (YAML errors quote source
/// lines).
pub(crate) fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.contains("://") {
            out.push_str(&redact_url(token));
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_hostlike(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | ',' | '[' | ']' | '%')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            (
                "amqp://guest:guest@localhost:5672/",
                "amqp://localhost:5672",
            ),
            (
                "amqps://u:p@rabbit.example.com:5671/vhost?heartbeat=10",
                "amqps://rabbit.example.com:5671",
            ),
            ("redis://localhost:6379", "redis://localhost:6379"),
            ("redis://:secret@localhost:6379/3", "redis://localhost:6379"),
            ("redis://secret@localhost:6379", "redis://localhost:6379"),
            (
                "rediss://user:secret@redis.example.com:6380/0",
                "rediss://redis.example.com:6380",
            ),
            ("redis://pw@h1:1,h2:2/0", "redis://h1:1,h2:2"),
            ("redis+socket://pw@/path.sock", "redis+socket://path.sock"),
            (
                "redis+socket://user:pw@/run/redis/redis.sock:/2",
                "redis+socket://redis.sock",
            ),
            ("sqlite://path.db", "sqlite://path.db"),
            ("sqlite:///var/lib/machinist/m.db?mode=rwc", "sqlite://m.db"),
            ("sqlite://", "sqlite://"),
            (
                "https://sqs.us-east-1.amazonaws.com/123/q",
                "https://sqs.us-east-1.amazonaws.com",
            ),
            (
                "https://dynamodb.us-east-1.amazonaws.com",
                "https://dynamodb.us-east-1.amazonaws.com",
            ),
            ("gcppubsub://project/subscription", "gcppubsub://project"),
            (
                "memcache://h1:11211,h2:11211",
                "memcache://h1:11211,h2:11211",
            ),
            (
                "mongodb+srv://u:p@cluster0.example.net/db?retryWrites=true",
                "mongodb+srv://cluster0.example.net",
            ),
            ("redis://[::1]:6379", "redis://[::1]:6379"),
            ("eager", "eager"),
            ("memory", "memory"),
            ("", ""),
            ("h1:11211,h2:11211", "h1:11211,h2:11211"),
            ("user:pw@host:1/x", "host:1"),
            // A password holding `/`: ambiguous, fully hidden.
            ("amqp://user:pa/ss@host/", "amqp://***"),
            ("redis://:p#w@host", "redis://***"),
            ("redis://:p@ss@host:1", "redis://host:1"),
            ("weird scheme://x", "***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn in_text() {
        assert_eq!(
            redact_urls_in("bad line: `broker: redis://:pw@h:1/0` here"),
            "bad line: `broker: redis://h:1` here"
        );
    }
}
