//! Request policy: a document of rules compiled once and evaluated per request.
//!
//! # Semantics
//!
//! * Rules are walked in priority order (higher `priority` first; equal priorities keep
//!   document order). A rule *matches* when every condition present in its `when` holds;
//!   list-valued conditions hold when any entry matches, and a rule without `when` always
//!   matches.
//! * `redact` and `route` rules do not stop the walk. Every matching `redact` rule
//!   contributes its spans; the first matching `route` rule picks the upstream target
//!   (later ones are still reported as matched).
//! * `allow` and `deny` are terminal: the walk stops at the first one that matches. If
//!   none matches, the document's `default` decides (`allow` unless stated otherwise).
//! * Conditions always see the original prompt text: redaction is applied after the
//!   walk and never changes what a later rule sees.
//! * A deny discards redactions and the route, since the request never goes upstream.
//!   [`Decision::matched`] lists every matched rule id in walk order, up to and including
//!   the terminal rule.
//!
//! # Matching
//!
//! `tenants` and `routes` match exactly; `models` and header values use glob syntax
//! (case-sensitive; `*` also matches `/`). Header names are case-insensitive and a rule
//! naming an absent header does not match. Prompt `regex` entries use the `regex` crate
//! syntax and `keywords` match as plain substrings; `case_insensitive` applies to both
//! (for keywords it folds ASCII letters only). A prompt condition holds when any pattern
//! occurs in any segment.
//!
//! All prompt patterns of all rules are compiled into one [`regex::RegexSet`] and two
//! Aho-Corasick automata (exact and ASCII-case-folded), so each segment is scanned once
//! however many rules there are, and only when a rule that needs the prompt is reached.
//! Redaction replaces every occurrence of the matching rules' patterns; overlapping or
//! adjacent spans merge into one and take the replacement of the earliest rule in walk
//! order.

mod compile;
mod document;
mod eval;
mod redact;
mod scan;

/// A compiled policy: immutable, cheap to share across threads.
pub struct Policy {
    /// This compilation's process-unique id (see [`crate::compiled_id`]).
    id: u64,
    default: Verdict,
    /// In walk order: priority descending, then document order.
    rules: Vec<compile::Rule>,
    scanner: scan::PromptScanner,
    header_names: Vec<String>,
}

impl Policy {
    /// Parses, validates and compiles a policy document given as JSON.
    pub fn compile(doc_json: &[u8]) -> Result<Policy, PolicyError> {
        compile::compile(doc_json)
    }

    /// Lowercase header names referenced by any rule, sorted, so callers can pass only
    /// those in [`RequestView::headers`].
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The request headers some rule reads, picked from all of a request's (names in
    /// lowercase, as HTTP/2 and the ASGI spec give them), values decoded as Latin-1 as
    /// HTTP defines header bytes: what [`RequestView::headers`] takes.
    pub fn select_headers<'h>(
        &self,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Vec<(String, String)> {
        if self.header_names.is_empty() {
            return Vec::new();
        }
        headers
            .into_iter()
            .filter_map(|(name, value)| {
                let named = self.header_names.iter().find(|n| n.as_bytes() == name)?;
                Some((
                    named.clone(),
                    value.iter().map(|&b| char::from(b)).collect(),
                ))
            })
            .collect()
    }

    /// This compilation's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn evaluate(&self, req: &RequestView<'_>) -> Decision {
        eval::evaluate(self, req)
    }
}

/// What a policy looks at in a request; borrowed so evaluation copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    /// `(name, value)` pairs with lowercase names; repeated names are allowed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The prompt text, one entry per text field of the request.
    pub segments: &'a [&'a str],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// `rule` is the id of the deny rule, or empty when the document `default` denied.
    Deny {
        status: u16,
        message: String,
        rule: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Ids of the matched rules in walk order.
    pub matched: Vec<String>,
    /// Upstream target chosen by the first matching route rule; `None` on deny.
    pub route: Option<String>,
    /// `(segment index, new text)` for each segment changed by redaction; empty on deny.
    pub rewrites: Vec<(usize, String)>,
}

/// A policy document that failed to compile; displays as `path: reason` on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PolicyError {
    path: String,
    reason: String,
}

impl PolicyError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests;
