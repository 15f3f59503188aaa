//! Parsing `TYPE:VALUE` command-line arguments into Go-typed [`Arg`]s.
//!
//! The type is one of Go Machinery's 29 type names; the value is checked with the same rules a
//! worker uses ([`GoValue::decode`]) and re-encoded the way Go encodes it (`float64:2.0` → `2`,
//! `[]uint8:[1,2]` → base64), so `encode` prints what a Go producer would send.

use machinist::types::TYPE_NAMES;
use machinist::{Arg, GoValue};
use serde_json::Value;

/// Shown after `machinist encode --help`.
pub const ENCODE_HELP: &str = "\
Argument values, per TYPE:
  string                     the text after the colon, as is    'string:hello world'
  bool                       true or false                      bool:true
  int, int8 … int64          an integer literal in range        int64:-3
  uint, uint8 … uint64       a non-negative integer in range    uint64:18446744073709551615
  float32, float64           a number                           float64:2.5
  []T (slices of the above)  a JSON array                       '[]int64:[1,2]'  '[]string:[\"a\",\"b\"]'
  []uint8, []byte            a JSON array of bytes, or base64   '[]uint8:[1,2,3]'  '[]byte:AQID'

Quote slices for the shell, as above.

Examples:
  machinist encode add int64:1 int64:2
  machinist encode sum_floats '[]float64:[1.5,2.7]'
  machinist encode add int64:1 int64:1 | machinist decode";

/// Shown after `machinist send --help`.
pub const SEND_HELP: &str = "\
Arguments are TYPE:VALUE with Go Machinery's type names (see `machinist encode --help`):
  int64:1  string:foo  float64:1.5  bool:true  '[]int64:[1,2]'  '[]string:[\"a\",\"b\"]'  []byte:AQID

Output: without --wait, one task UUID per line. With --wait, one line per task
(`UUID STATE results-or-error`), or with --json the stored state as Machinery's JSON.
Exit code: 0 every task succeeded, 1 one failed, 2 one gave no result before --timeout.

Examples:
  machinist send add int64:1 int64:2
  machinist send add int64:1 int64:2 --wait --timeout 10s --json
  machinist send long_running_task --delay 1m
  machinist send sleep int64:10 --count 1000";

/// Parses `TYPE:VALUE` (split at the first `:`, so a string value may contain colons).
pub fn parse_arg(s: &str) -> Result<Arg, String> {
    let Some((type_name, text)) = s.split_once(':') else {
        return Err("expected TYPE:VALUE, e.g. int64:1 or []string:[\"a\",\"b\"]".to_owned());
    };
    if !TYPE_NAMES.contains(&type_name) {
        return Err(format!(
            "unknown type {type_name:?}; Go Machinery's types are: {}",
            TYPE_NAMES.join(", ")
        ));
    }
    let json = match type_name {
        "string" => Value::String(text.to_owned()),
        // Bare base64 for bytes, as Go puts them on the wire.
        "[]uint8" | "[]byte" if !text.trim_start().starts_with(['[', '"']) => {
            Value::String(text.to_owned())
        }
        _ => serde_json::from_str(text)
            .map_err(|e| format!("{text:?} is not a valid {type_name} value: {e}"))?,
    };
    let value = GoValue::decode(type_name, &json).map_err(|e| e.to_string())?;
    Arg::typed(type_name, value.to_json()).map_err(|e| e.to_string())
}

/// Parses a duration: `30s`, `1m30s`, `500ms`, `1.5h`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    machinist::config::parse_duration(s).map_err(|e| e.to_string())
}

/// Checks an RFC 3339 instant; the text is parsed again when the message is built.
pub fn parse_eta(s: &str) -> Result<String, String> {
    machinist::time::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not an RFC 3339 time (like 2030-01-02T03:04:05Z): {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(s: &str) -> (String, Value) {
        let a = parse_arg(s).expect(s);
        (a.type_name, a.value)
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("int64:1"), ("int64".into(), json!(1)));
        assert_eq!(ok("int8:-128"), ("int8".into(), json!(-128)));
        assert_eq!(
            ok("uint64:18446744073709551615"),
            ("uint64".into(), json!(u64::MAX))
        );
        assert_eq!(ok("bool:true"), ("bool".into(), json!(true)));
        assert_eq!(ok("float64:2.0"), ("float64".into(), json!(2)));
        assert_eq!(ok("float64:2.5"), ("float64".into(), json!(2.5)));
        assert_eq!(ok("string:a:b c"), ("string".into(), json!("a:b c")));
        assert_eq!(ok("string:"), ("string".into(), json!("")));
    }

    #[test]
    fn slices() {
        assert_eq!(ok("[]int64:[1,2]"), ("[]int64".into(), json!([1, 2])));
        assert_eq!(
            ok(r#"[]string:["a","b"]"#),
            ("[]string".into(), json!(["a", "b"]))
        );
        assert_eq!(ok("[]uint8:[1,2,3]"), ("[]uint8".into(), json!("AQID")));
        assert_eq!(ok("[]byte:AQID"), ("[]byte".into(), json!("AQID")));
        assert_eq!(ok("[]int64:null"), ("[]int64".into(), json!([])));
    }

    #[test]
    fn bad_input_is_explained() {
        let err = |s: &str| parse_arg(s).expect_err(s);
        assert!(err("int64").contains("TYPE:VALUE"));
        assert!(err("int128:1").contains("unknown type"));
        assert!(
            err("int64:1.5").contains("is not int64"),
            "{}",
            err("int64:1.5")
        );
        assert!(err("int8:300").contains("overflows"), "{}", err("int8:300"));
        assert!(err("bool:yes").contains("not a valid bool"));
        assert!(err("[]int64:[1,\"x\"]").contains("int64"));
        assert!(err("uint8:-1").contains("uint8"));
    }

    #[test]
    fn eta() {
        assert!(parse_eta("2030-01-02T03:04:05Z").is_ok());
        assert!(parse_eta("2030-01-02T03:04:05.5+02:00").is_ok());
        assert!(parse_eta("tomorrow").is_err());
    }
}
