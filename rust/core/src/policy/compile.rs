//! Turns a [`Document`] into a [`Policy`], refusing anything ambiguous with an error
//! that names the offending field.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;

use super::document::{ActionKind, DefaultVerdict, Document, PromptDoc, RuleDoc, WhenDoc};
use super::scan::PromptScannerBuilder;
use super::{Policy, PolicyError, Verdict};

pub(super) struct Rule {
    pub id: String,
    pub conditions: Conditions,
    pub action: Action,
}

pub(super) enum Action {
    Allow,
    Deny { status: u16, message: String },
    Redact(Redaction),
    Route { upstream: String },
}

pub(super) struct Redaction {
    pub replacement: String,
    /// The rule's own compiled regexes: redaction needs match spans, which the shared
    /// `RegexSet` cannot report.
    pub regexes: Vec<Regex>,
}

/// Absent (`None` or empty) conditions always hold.
pub(super) struct Conditions {
    pub tenants: Option<Vec<String>>,
    pub models: Option<GlobSet>,
    pub routes: Option<Vec<&'static str>>,
    pub headers: Vec<HeaderCondition>,
    /// Whether the rule has a prompt condition; its patterns live in the shared scanner.
    pub prompt: bool,
}

pub(super) struct HeaderCondition {
    /// Lowercase.
    pub name: String,
    pub values: GlobSet,
}

/// A rule's prompt patterns, validated, waiting for the rule's final walk position.
pub(super) struct PromptPatterns {
    /// Regex sources as compiled, `(?i)`-prefixed when case-insensitive.
    pub regex_sources: Vec<String>,
    pub regexes: Vec<Regex>,
    pub keywords: Vec<String>,
    pub case_insensitive: bool,
}

pub(super) fn compile(doc_json: &[u8]) -> Result<Policy, PolicyError> {
    let document = parse_document(doc_json)?;

    let mut seen_ids = HashSet::new();
    let mut staged = Vec::with_capacity(document.rules.len());
    for (index, rule_doc) in document.rules.into_iter().enumerate() {
        let path = format!("rules[{index}]");
        let priority = rule_doc.priority;
        let (rule, patterns) = compile_rule(&path, rule_doc)?;
        if !seen_ids.insert(rule.id.clone()) {
            return Err(PolicyError::new(
                format!("{path}.id"),
                format!("duplicate rule id {:?}", rule.id),
            ));
        }
        staged.push((priority, rule, patterns));
    }
    // A stable sort, so rules of equal priority keep document order.
    staged.sort_by_key(|(priority, _, _)| Reverse(*priority));

    let mut scanner = PromptScannerBuilder::default();
    let mut rules = Vec::with_capacity(staged.len());
    for (walk_index, (_, rule, patterns)) in staged.into_iter().enumerate() {
        if let Some(patterns) = &patterns {
            scanner.add(walk_index, patterns);
        }
        rules.push(rule);
    }

    let mut header_names: Vec<String> = rules
        .iter()
        .flat_map(|rule| rule.conditions.headers.iter().map(|h| h.name.clone()))
        .collect();
    header_names.sort();
    header_names.dedup();

    let default = match document.default {
        DefaultVerdict::Allow => Verdict::Allow,
        DefaultVerdict::Deny => Verdict::Deny {
            status: 403,
            message: "request denied by policy default".to_string(),
            rule: String::new(),
        },
    };
    Ok(Policy {
        id: crate::compiled_id(),
        default,
        rules,
        scanner: scanner.build()?,
        header_names,
    })
}

fn parse_document(doc_json: &[u8]) -> Result<Document, PolicyError> {
    // Serde would also accept a struct written as an array of its field values; a
    // document that is not an object is a mistake (often a bare list of rules).
    if doc_json.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return Err(PolicyError::new(
            "policy document",
            "must be a JSON object with `default` and `rules`",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(doc_json);
    let document = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." {
            "policy document".to_string()
        } else {
            path
        };
        PolicyError::new(path, err.into_inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|err| PolicyError::new("policy document", err.to_string()))?;
    Ok(document)
}

fn compile_rule(path: &str, doc: RuleDoc) -> Result<(Rule, Option<PromptPatterns>), PolicyError> {
    let id_is_valid = !doc.id.is_empty()
        && doc
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !id_is_valid {
        return Err(PolicyError::new(
            format!("{path}.id"),
            "must be non-empty and use only letters, digits, '_', '.', ':' and '-'",
        ));
    }

    // Fields that only make sense for one action are refused elsewhere: they would
    // otherwise be silently ignored, hiding a mistaken `action`.
    let action_fields = [
        ("status", doc.status.is_some(), ActionKind::Deny),
        ("message", doc.message.is_some(), ActionKind::Deny),
        ("replacement", doc.replacement.is_some(), ActionKind::Redact),
        ("upstream", doc.upstream.is_some(), ActionKind::Route),
    ];
    for (field, present, owner) in action_fields {
        if present && doc.action != owner {
            return Err(PolicyError::new(
                format!("{path}.{field}"),
                format!("only allowed when action is {}", owner.name()),
            ));
        }
    }

    let (conditions, patterns) = compile_when(&format!("{path}.when"), doc.when)?;

    let action = match doc.action {
        ActionKind::Allow => Action::Allow,
        ActionKind::Deny => {
            let status = doc.status.unwrap_or(403);
            if !(400..=599).contains(&status) {
                return Err(PolicyError::new(
                    format!("{path}.status"),
                    "must be between 400 and 599",
                ));
            }
            let message = doc
                .message
                .unwrap_or_else(|| format!("request denied by policy rule {}", doc.id));
            Action::Deny {
                status: status as u16,
                message,
            }
        }
        ActionKind::Redact => {
            let Some(patterns) = &patterns else {
                return Err(PolicyError::new(
                    format!("{path}.when.prompt"),
                    "required when action is redact (it says what to redact)",
                ));
            };
            Action::Redact(Redaction {
                replacement: doc.replacement.unwrap_or_else(|| "[REDACTED]".to_string()),
                regexes: patterns.regexes.clone(),
            })
        }
        ActionKind::Route => match doc.upstream {
            Some(upstream) if !upstream.is_empty() => Action::Route { upstream },
            Some(_) => {
                return Err(PolicyError::new(
                    format!("{path}.upstream"),
                    "must not be empty",
                ))
            }
            None => {
                return Err(PolicyError::new(
                    format!("{path}.upstream"),
                    "required when action is route",
                ))
            }
        },
    };

    let rule = Rule {
        id: doc.id,
        conditions,
        action,
    };
    Ok((rule, patterns))
}

fn compile_when(
    path: &str,
    when: Option<WhenDoc>,
) -> Result<(Conditions, Option<PromptPatterns>), PolicyError> {
    let Some(when) = when else {
        let always = Conditions {
            tenants: None,
            models: None,
            routes: None,
            headers: Vec::new(),
            prompt: false,
        };
        return Ok((always, None));
    };

    let tenants = when
        .tenants
        .map(|tenants| non_empty(&format!("{path}.tenants"), tenants))
        .transpose()?;
    let models = when
        .models
        .map(|globs| glob_set(&format!("{path}.models"), &globs))
        .transpose()?;
    let routes = when
        .routes
        .map(|routes| non_empty(&format!("{path}.routes"), routes))
        .transpose()?
        .map(|routes| routes.into_iter().map(|route| route.as_str()).collect());
    let headers = match when.headers {
        Some(headers) => compile_headers(&format!("{path}.headers"), headers)?,
        None => Vec::new(),
    };
    let patterns = when
        .prompt
        .map(|prompt| compile_prompt(&format!("{path}.prompt"), prompt))
        .transpose()?;

    let conditions = Conditions {
        tenants,
        models,
        routes,
        headers,
        prompt: patterns.is_some(),
    };
    Ok((conditions, patterns))
}

/// An empty any-of list could never match, which is always a mistake in a policy.
fn non_empty<T>(path: &str, list: Vec<T>) -> Result<Vec<T>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::new(path, "must not be empty"));
    }
    Ok(list)
}

fn glob_set(path: &str, globs: &[String]) -> Result<GlobSet, PolicyError> {
    if globs.is_empty() {
        return Err(PolicyError::new(path, "must not be empty"));
    }
    let mut builder = GlobSetBuilder::new();
    for (index, glob) in globs.iter().enumerate() {
        let glob = Glob::new(glob)
            .map_err(|err| PolicyError::new(format!("{path}[{index}]"), err.to_string()))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|err| PolicyError::new(path, err.to_string()))
}

fn compile_headers(
    path: &str,
    headers: BTreeMap<String, Vec<String>>,
) -> Result<Vec<HeaderCondition>, PolicyError> {
    if headers.is_empty() {
        return Err(PolicyError::new(path, "must not be empty"));
    }
    let mut conditions: Vec<HeaderCondition> = Vec::with_capacity(headers.len());
    for (name, globs) in headers {
        let lowercase = name.to_ascii_lowercase();
        if lowercase.is_empty() {
            return Err(PolicyError::new(path, "header names must not be empty"));
        }
        if conditions.iter().any(|c| c.name == lowercase) {
            return Err(PolicyError::new(
                format!("{path}.{name}"),
                format!("header {lowercase:?} is named twice (names are case-insensitive)"),
            ));
        }
        let values = glob_set(&format!("{path}.{name}"), &globs)?;
        conditions.push(HeaderCondition {
            name: lowercase,
            values,
        });
    }
    Ok(conditions)
}

fn compile_prompt(path: &str, prompt: PromptDoc) -> Result<PromptPatterns, PolicyError> {
    if prompt.regex.is_empty() && prompt.keywords.is_empty() {
        return Err(PolicyError::new(
            path,
            "needs at least one entry in `regex` or `keywords`",
        ));
    }
    let mut regex_sources = Vec::with_capacity(prompt.regex.len());
    let mut regexes = Vec::with_capacity(prompt.regex.len());
    for (index, pattern) in prompt.regex.into_iter().enumerate() {
        let source = if prompt.case_insensitive {
            format!("(?i){pattern}")
        } else {
            pattern
        };
        let regex = Regex::new(&source).map_err(|err| {
            PolicyError::new(format!("{path}.regex[{index}]"), regex_error_line(err))
        })?;
        regex_sources.push(source);
        regexes.push(regex);
    }
    if let Some(index) = prompt.keywords.iter().position(String::is_empty) {
        // An empty keyword would match at every position of every prompt.
        return Err(PolicyError::new(
            format!("{path}.keywords[{index}]"),
            "must not be empty",
        ));
    }
    Ok(PromptPatterns {
        regex_sources,
        regexes,
        keywords: prompt.keywords,
        case_insensitive: prompt.case_insensitive,
    })
}

/// `regex` renders syntax errors over several lines with a caret diagram; policy errors
/// are one line, so keep only the description.
pub(super) fn regex_error_line(err: regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => {
            match text.lines().find_map(|line| line.strip_prefix("error: ")) {
                Some(description) => format!("regex parse error: {description}"),
                None => text.split_whitespace().collect::<Vec<_>>().join(" "),
            }
        }
        other => other
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}
