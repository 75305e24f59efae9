//! Reading objects that keep their unknown fields, in one pass.
//!
//! Most types here keep the fields they do not model in an `extra` map. `#[serde(flatten)]`
//! does that, but at a price paid on every request, response and streamed chunk: serde first
//! buffers the whole object into an intermediate tree, then reads each field back out of it.
//! That made a chat response four times slower to parse than the same struct without the
//! catch-all. [`deserialize_keeping_extra!`] writes the visitor by hand instead: known keys
//! go straight into their fields, every other key into `extra`. Serialisation still uses the
//! derive and its `flatten`, which costs little on the way out.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `Deserialize` for a struct with an `extra: Extra` catch-all, read in one pass.
///
/// Fields are given as `"json_key" => field`, in up to three lists, in this order:
/// - `required`: an error names the key when it is missing;
/// - `optional`: `Default::default()` when missing (`None` for options), as
///   `#[serde(default)]` does;
/// - `or_else`: the named function gives the value when missing;
/// - `not_read`: fields that are not in the JSON at all, left at their `Default`.
///
/// A known key given twice is an error, as with the derive.
macro_rules! deserialize_keeping_extra {
    (
        $ty:ident, $expecting:literal,
        $(required { $($rkey:literal => $rfield:ident),* $(,)? },)?
        $(optional { $($okey:literal => $ofield:ident),* $(,)? },)?
        $(or_else { $($dkey:literal => $dfield:ident = $dfn:path),* $(,)? },)?
        $(not_read { $($nfield:ident),* $(,)? },)?
    ) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        use serde::de::Error as _;
                        $($(let mut $rfield = None;)*)?
                        $($(let mut $ofield = None;)*)?
                        $($(let mut $dfield = None;)*)?
                        let mut extra = $crate::Extra::new();
                        while let Some(key) = map.next_key::<$crate::extra::Key<'de>>()? {
                            match key.as_str() {
                                $($($rkey => {
                                    if $rfield.is_some() {
                                        return Err(A::Error::duplicate_field($rkey));
                                    }
                                    $rfield = Some(map.next_value()?);
                                })*)?
                                $($($okey => {
                                    if $ofield.is_some() {
                                        return Err(A::Error::duplicate_field($okey));
                                    }
                                    $ofield = Some(map.next_value()?);
                                })*)?
                                $($($dkey => {
                                    if $dfield.is_some() {
                                        return Err(A::Error::duplicate_field($dkey));
                                    }
                                    $dfield = Some(map.next_value()?);
                                })*)?
                                _ => {
                                    let value = map.next_value()?;
                                    extra.insert(key.into_string(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($($rfield: $rfield.ok_or_else(|| A::Error::missing_field($rkey))?,)*)?
                            $($($ofield: $ofield.unwrap_or_default(),)*)?
                            $($($dfield: $dfield.unwrap_or_else($dfn),)*)?
                            $($($nfield: Default::default(),)*)?
                            extra,
                        })
                    }
                }
                d.deserialize_map(ObjectVisitor)
            }
        }
    };
}

pub(crate) use deserialize_keeping_extra;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::chat::{ChatChunk, ChatRequest, ChatResponse, FinishReason};

    fn response() -> serde_json::Value {
        json!({
            "id": "c1", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi", "annotations": []}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            "vendor": {"x": 1}
        })
    }

    #[test]
    fn unknown_fields_land_in_extra_at_every_level() {
        let r: ChatResponse = serde_json::from_value(response()).unwrap();
        assert_eq!(r.extra["vendor"], json!({"x": 1}));
        assert_eq!(r.choices[0].message.extra["annotations"], json!([]));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(r.usage.unwrap().total_tokens, 3);
        // Parsed from bytes too, where keys are borrowed rather than owned.
        let bytes = serde_json::to_vec(&response()).unwrap();
        let r: ChatResponse = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(r.extra.len(), 1);
    }

    #[test]
    fn defaults_and_nulls_behave_as_the_derive_did() {
        let r: ChatResponse = serde_json::from_value(response()).unwrap();
        assert_eq!(
            r.object, "chat.completion",
            "absent `object` takes its default"
        );
        assert_eq!(r.system_fingerprint, None);
        let c: ChatChunk = serde_json::from_value(
            json!({"id": "c", "created": 1, "model": "m", "usage": null, "service_tier": null}),
        )
        .unwrap();
        assert_eq!(c.object, "chat.completion.chunk");
        assert!(c.choices.is_empty() && c.usage.is_none() && c.service_tier.is_none());
        assert!(c.extra.is_empty(), "null known fields are not extras");
    }

    #[test]
    fn received_json_is_kept_only_when_one_line_and_never_compared_or_serialised() {
        use crate::chat::ReceivedJson;
        assert!(ReceivedJson::new("{\"a\":1}").get().is_some());
        let multi_line = ReceivedJson::new("{\n\"a\":1}");
        assert!(multi_line.get().is_none(), "could not be one data: line");
        assert!(ReceivedJson::new("{\"a\":1}\r").get().is_none());
        let text = r#"{"id":"c","created":1,"model":"m"}"#;
        let parsed: ChatChunk = serde_json::from_str(text).unwrap();
        assert!(
            parsed.received.get().is_none(),
            "only the parser's caller sets it"
        );
        let mut kept = parsed.clone();
        kept.received = ReceivedJson::new(text);
        assert_eq!(kept, parsed);
        assert!(!serde_json::to_string(&kept).unwrap().contains("received"));
        assert_eq!(format!("{:?}", kept.received), "ReceivedJson(34 bytes)");
        kept.received.clear();
        assert!(kept.received.get().is_none());
    }

    #[test]
    fn escaped_keys_are_still_recognised() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"mo\u0064el":"m","messages":[{"role":"user","content":"x"}],"\u006eew":1}"#,
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.extra["new"], json!(1));
    }

    #[test]
    fn missing_duplicate_and_mistyped_fields_are_errors_that_name_them() {
        let err = |s: &str| {
            serde_json::from_str::<ChatRequest>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"messages":[]}"#).contains("missing field `model`"));
        assert!(
            err(r#"{"model":"a","model":"b","messages":[]}"#).contains("duplicate field `model`")
        );
        assert!(err(r#"{"model":5,"messages":[]}"#).contains("invalid type: integer `5`"));
        assert!(err(r#"[1]"#).contains("a chat completion request object"));
    }
}
