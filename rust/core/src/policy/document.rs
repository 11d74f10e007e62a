//! The policy document as written by operators, before any validation beyond shape.
//!
//! Every struct refuses unknown fields so that a typo such as `modles` is a compile
//! error instead of a silently ignored condition.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Document {
    #[serde(default)]
    pub default: DefaultVerdict,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum DefaultVerdict {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleDoc {
    pub id: String,
    #[serde(default)]
    pub priority: i32,
    pub when: Option<WhenDoc>,
    pub action: ActionKind,
    /// Wider than `u16` so an out-of-range status gets our "must be between" message.
    pub status: Option<i64>,
    pub message: Option<String>,
    pub replacement: Option<String>,
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ActionKind {
    Allow,
    Deny,
    Redact,
    Route,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Allow => "allow",
            ActionKind::Deny => "deny",
            ActionKind::Redact => "redact",
            ActionKind::Route => "route",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhenDoc {
    pub tenants: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub routes: Option<Vec<RouteName>>,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub prompt: Option<PromptDoc>,
}

/// The gateway routes a rule can name; an enum so a misspelt route is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RouteName {
    Chat,
    Completions,
    Embeddings,
    Messages,
    Models,
}

impl RouteName {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteName::Chat => "chat",
            RouteName::Completions => "completions",
            RouteName::Embeddings => "embeddings",
            RouteName::Messages => "messages",
            RouteName::Models => "models",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PromptDoc {
    #[serde(default)]
    pub regex: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub case_insensitive: bool,
}
