//! JSON writing for what weir sends on: request bodies to upstreams, and answers and chunks it
//! writes itself.
//!
//! sonic-rs rather than serde_json here, for one reason: serde_json escapes strings a byte at a
//! time, and a request is mostly strings. With a 40 KB conversation, serde_json's escaping was
//! half of all the instructions the gateway spent on the request (callgrind); sonic-rs scans
//! for characters to escape 16 or 32 bytes at a time. It takes the same `serde::Serialize`
//! types and writes the same bytes for them (tested below against serde_json). Parsing stays
//! with serde_json, whose error messages (with line and column) reach the client.

use serde::Serialize;

/// Why a value could not be written as JSON (a map with non-string keys, or a `Serialize`
/// implementation that failed).
#[derive(Debug, thiserror::Error)]
#[error("could not write JSON: {0}")]
pub struct WriteError(String);

/// `value` as compact JSON.
///
/// Into a fresh `Vec` that grows as it goes. Writing into a scratch buffer the thread keeps
/// and copying out once saved instructions under callgrind but was 48% slower for a 40 KB body
/// in wall time (`chat_long/upstream_body`), so the plain way stays.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WriteError> {
    sonic_rs::to_vec(value).map_err(|e| WriteError(e.to_string()))
}

/// `value` as compact JSON, appended to `out` (an SSE frame's prefix already in it, say). On
/// an error, `out` may hold part of the value: truncate it back.
pub fn extend<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), WriteError> {
    sonic_rs::to_writer(out, value).map_err(|e| WriteError(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::*;

    fn same_as_serde_json(v: &Value) {
        let ours = String::from_utf8(to_vec(v).unwrap()).unwrap();
        assert_eq!(ours, serde_json::to_string(v).unwrap(), "{v}");
        let mut framed = b"data: ".to_vec();
        extend(&mut framed, v).unwrap();
        assert_eq!(framed, [b"data: ", ours.as_bytes()].concat());
    }

    #[test]
    fn writes_what_serde_json_writes() {
        for v in [
            json!(null),
            json!({"a": [1, -2, 3.5, 0.1, 1.0, 100.0, 1e-7, 1.5e300, 2.2250738585072014e-308,
                          18446744073709551615u64, -9223372036854775808i64, true, false, null]}),
            json!({"z": {"nested": ["", "\u{0}\u{1f}\u{7f}", "\"\\/", "é漢字🙂", "\u{2028}\u{2029}"]}}),
            json!({"text": "line\nbreak\ttab\r\u{8}\u{c}", "k\"ey": "v"}),
            json!([[], {}, [{}], {"": ""}]),
        ] {
            same_as_serde_json(&v);
        }
        // Typed values (floats formatted from f64 and f32, unit and newtype variants).
        #[derive(Serialize)]
        struct Typed {
            f: f64,
            g: f32,
            n: Option<u8>,
            e: Kind,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            StopSequence,
        }
        let t = Typed {
            f: 0.7,
            g: 0.7,
            n: None,
            e: Kind::StopSequence,
        };
        assert_eq!(
            String::from_utf8(to_vec(&t).unwrap()).unwrap(),
            serde_json::to_string(&t).unwrap()
        );
    }

    #[test]
    fn bodies_of_any_size_come_out_whole_one_after_another() {
        // Large, small, very large, small: each buffer holds exactly its value.
        for len in [40_000, 3, 2 << 20, 10] {
            let v = Value::String("x".repeat(len));
            let bytes = to_vec(&v).unwrap();
            assert_eq!(bytes.len(), len + 2);
            assert_eq!(bytes, serde_json::to_vec(&v).unwrap());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\\x00-\\x20\"\\\\\u{7f}-\u{a0}]*|.*") {
            same_as_serde_json(&Value::String(s));
        }

        #[test]
        fn any_float_is_written_as_serde_json_writes_it(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            same_as_serde_json(&json!(f));
        }
    }
}
