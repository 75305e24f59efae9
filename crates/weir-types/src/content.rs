//! How message content is read: [`MessageContent`] and [`ContentPart`] (and Anthropic's
//! message content and system prompt) straight from the input, in one pass.
//!
//! serde's derives for these shapes (an untagged enum, and one tagged by its `type` field)
//! first copy the whole value into a buffer and then read the copy, so every string of every
//! message was allocated and copied twice. Prompts are most of a request's bytes, and an
//! image part's `data:` URL can run to megabytes, so the readers here take each string once.
//! They accept what the derives accepted, in any key order, with clearer messages.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::anthropic;
use crate::chat::{ContentPart, ImageUrl, MessageContent};

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_or_list(
            d,
            "a string or an array of content parts",
            Self::Text,
            Self::Parts,
        )
    }
}

impl<'de> Deserialize<'de> for anthropic::MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_or_list(
            d,
            "a string or an array of content blocks",
            Self::Text,
            Self::Blocks,
        )
    }
}

impl<'de> Deserialize<'de> for anthropic::SystemPrompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_or_list(
            d,
            "a string or an array of text blocks",
            Self::Text,
            Self::Blocks,
        )
    }
}

fn text_or_list<'de, D: Deserializer<'de>, C, T: Deserialize<'de>>(
    d: D,
    expecting: &'static str,
    text: fn(String) -> C,
    list: fn(Vec<T>) -> C,
) -> Result<C, D::Error> {
    d.deserialize_any(TextOrList {
        expecting,
        text,
        list,
    })
}

/// Reads "a string, or a list of `T`" straight from the input into one of two variants.
struct TextOrList<C, T> {
    expecting: &'static str,
    text: fn(String) -> C,
    list: fn(Vec<T>) -> C,
}

impl<'de, C, T: Deserialize<'de>> Visitor<'de> for TextOrList<C, T> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<C, E> {
        Ok((self.text)(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<C, E> {
        Ok((self.text)(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<C, A::Error> {
        // The hint comes from the input: bounded, so a hostile one cannot reserve much.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok((self.list)(items))
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartVisitor)
    }
}

const PART_TYPES: &[&str] = &["text", "image_url", "input_audio", "file"];

struct PartVisitor;

impl<'de> Visitor<'de> for PartVisitor {
    type Value = ContentPart;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content part object with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContentPart, A::Error> {
        // Each known field is kept as it comes (a `Value` owns the parsed string: no copy) and
        // read as its variant's type once `type` is known, wherever it came in the object.
        // Fields of other variants are kept but not checked, as the derive ignored them. Keys
        // and the type are matched in place, without allocating.
        let mut kind: Option<PartType> = None;
        let mut fields: [Option<Value>; 4] = [None, None, None, None];
        while let Some(key) = map.next_key::<PartKey>()? {
            match key {
                PartKey::Type if kind.is_some() => {
                    return Err(de::Error::duplicate_field("type"));
                }
                PartKey::Type => kind = Some(map.next_value()?),
                PartKey::Field(slot) if fields[slot].is_some() => {
                    return Err(de::Error::duplicate_field(PART_TYPES[slot]));
                }
                PartKey::Field(slot) => fields[slot] = Some(map.next_value()?),
                PartKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let PartType(slot) = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        let field = PART_TYPES[slot];
        let value = fields[slot]
            .take()
            .ok_or_else(|| de::Error::missing_field(field))?;
        let wrong = |e: serde_json::Error| de::Error::custom(format_args!("`{field}`: {e}"));
        Ok(match slot {
            0 => ContentPart::Text {
                text: String::deserialize(value).map_err(wrong)?,
            },
            1 => ContentPart::ImageUrl {
                image_url: ImageUrl::deserialize(value).map_err(wrong)?,
            },
            2 => ContentPart::InputAudio { input_audio: value },
            _ => ContentPart::File { file: value },
        })
    }
}

/// A key of a content part, matched without allocating: `type`, a part type's field (its
/// index in [`PART_TYPES`]: each type's one field is named after it), or anything else.
enum PartKey {
    Type,
    Field(usize),
    Other,
}

impl<'de> Deserialize<'de> for PartKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = PartKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PartKey, E> {
                Ok(match PART_TYPES.iter().position(|t| *t == v) {
                    Some(slot) => PartKey::Field(slot),
                    None if v == "type" => PartKey::Type,
                    None => PartKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A part's `type`, as its index in [`PART_TYPES`].
struct PartType(usize);

impl<'de> Deserialize<'de> for PartType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TypeVisitor;
        impl Visitor<'_> for TypeVisitor {
            type Value = PartType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part type")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PartType, E> {
                PART_TYPES
                    .iter()
                    .position(|t| *t == v)
                    .map(PartType)
                    .ok_or_else(|| de::Error::unknown_variant(v, PART_TYPES))
            }
        }
        d.deserialize_str(TypeVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn content(v: Value) -> Result<MessageContent, String> {
        let text = v.to_string();
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn content_reads_text_and_every_kind_of_part_in_any_key_order() {
        assert_eq!(
            content(json!("hi")).unwrap(),
            MessageContent::Text("hi".into())
        );
        let parts = content(json!([
            {"type": "text", "text": "look"},
            {"image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}, "type": "image_url"},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            {"file": {"file_id": "file-1"}, "type": "file", "cache_control": {"type": "ephemeral"}},
        ]))
        .unwrap();
        assert_eq!(
            parts,
            MessageContent::Parts(vec![
                ContentPart::Text {
                    text: "look".into()
                },
                ContentPart::ImageUrl {
                    image_url: ImageUrl {
                        url: "data:image/png;base64,AAA".into(),
                        detail: Some("low".into()),
                    }
                },
                ContentPart::InputAudio {
                    input_audio: json!({"data": "UklG", "format": "wav"})
                },
                ContentPart::File {
                    file: json!({"file_id": "file-1"})
                },
            ])
        );
        assert_eq!(content(json!([])).unwrap(), MessageContent::Parts(vec![]));
        // Escapes are decoded as before.
        assert_eq!(
            content(json!("a\"b\\n")).unwrap(),
            MessageContent::Text("a\"b\\n".into())
        );
    }

    #[test]
    fn anthropic_content_and_system_prompts_read_strings_and_blocks_as_before() {
        use crate::anthropic::{ContentBlock, MessageContent as Content, SystemPrompt};
        let text: Content = serde_json::from_str(r#""hi""#).unwrap();
        assert_eq!(text, Content::Text("hi".into()));
        let blocks = json!([
            {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
        ]);
        let parsed: Content = serde_json::from_str(&blocks.to_string()).unwrap();
        let Content::Blocks(list) = &parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(list.len(), 4);
        assert!(matches!(list[3], ContentBlock::Other(_)), "{:?}", list[3]);
        // Unchanged on the way out, unknown block included.
        assert_eq!(serde_json::to_value(&parsed).unwrap(), blocks);

        let system: SystemPrompt = serde_json::from_str(r#""be brief""#).unwrap();
        assert_eq!(system.text(), "be brief");
        let system: SystemPrompt =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#)
                .unwrap();
        assert_eq!(system.text(), "a\n\nb");

        let err = serde_json::from_str::<Content>("7")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a string or an array of content blocks"),
            "{err}"
        );
        let err = serde_json::from_str::<SystemPrompt>("{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a string or an array of text blocks"),
            "{err}"
        );
    }

    #[test]
    fn content_round_trips_through_serialisation() {
        let v = json!([
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": "https://e.x/a.png"}},
        ]);
        let parsed = content(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
        // From a `Value` too (the library builds requests that way).
        let from_value: MessageContent = serde_json::from_value(v).unwrap();
        assert_eq!(from_value, parsed);
    }

    #[test]
    fn fields_of_other_part_types_are_ignored_as_before() {
        let part = content(json!([{"type": "text", "text": "t", "image_url": 5}])).unwrap();
        assert_eq!(
            part,
            MessageContent::Parts(vec![ContentPart::Text { text: "t".into() }])
        );
    }

    #[test]
    fn bad_content_is_refused_with_a_message_that_says_what_was_expected() {
        let cases = [
            (json!(5), "expected a string or an array of content parts"),
            (
                json!({"type": "text"}),
                "expected a string or an array of content parts",
            ),
            (json!([{"text": "no type"}]), "missing field `type`"),
            (
                json!([{"type": "video", "video": 1}]),
                "unknown variant `video`",
            ),
            (json!([{"type": "text"}]), "missing field `text`"),
            (
                json!([{"type": "text", "text": 7}]),
                "`text`: invalid type: integer `7`",
            ),
            (
                json!([{"type": "image_url", "image_url": {}}]),
                "`image_url`: missing field `url`",
            ),
            (
                json!(["bare string part"]),
                "expected a content part object",
            ),
        ];
        for (v, want) in cases {
            let err = content(v.clone()).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
        let dup =
            serde_json::from_str::<MessageContent>(r#"[{"type":"text","type":"text","text":"a"}]"#)
                .unwrap_err()
                .to_string();
        assert!(dup.contains("duplicate field `type`"), "{dup}");
    }
}
