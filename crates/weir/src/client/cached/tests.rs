//! Cache entries: their layout, and reading them back whatever the layout.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn entries_keep_the_answer_bytes_and_escape_the_names() {
    let answer = br#"{ "id":"c1","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\""},"finish_reason":"stop"}],
        "x_vendor": 1.50 }"#;
    let entry = CachedResponse::write("odd\"name", "model\\x", answer);
    let read = CachedResponse::read(&entry).unwrap();
    assert_eq!(read.provider, "odd\"name");
    assert_eq!(read.upstream_model, "model\\x");
    assert_eq!(&read.response_json[..], &answer[..]);
    assert_eq!(read.response.id, "c1");
    assert!(CachedResponse::read(&Bytes::from_static(b"{\"provider\":1}")).is_err());
}

/// Entries in another layout (fields reordered, spaces) still read, by the general parse;
/// cut or broken ones are errors (misses), never a wrong answer.
#[test]
fn entries_in_any_layout_read_and_broken_ones_do_not() {
    let answer = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
    let other = format!(r#"{{ "response": {answer}, "upstream_model": "u", "provider": "p" }}"#);
    let read = CachedResponse::read(&Bytes::from(other)).unwrap();
    assert_eq!(
        (read.provider.as_str(), read.upstream_model.as_str()),
        ("p", "u")
    );
    assert_eq!(&read.response_json[..], answer.as_bytes());
    let entry = CachedResponse::write("p", "u", answer.as_bytes());
    for cut in [entry.len() - 1, entry.len() - 3, 30] {
        assert!(
            CachedResponse::read(&entry.slice(..cut)).is_err(),
            "cut at {cut}"
        );
    }
    assert!(CachedResponse::read(&Bytes::from_static(b"\xff\xfe")).is_err());
}
