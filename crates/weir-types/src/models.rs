//! OpenAI model listing: `GET /v1/models`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default = "object_list")]
    pub object: String,
    pub data: Vec<Model>,
}

fn object_list() -> String {
    "list".into()
}
fn object_model() -> String {
    "model".into()
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: object_list(),
            data,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(default = "object_model")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
}

impl Model {
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: object_model(),
            created: 0,
            owned_by: owned_by.into(),
        }
    }
}
