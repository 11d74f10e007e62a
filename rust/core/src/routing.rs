//! Routing: which upstream provider and model serve a request.
//!
//! A routing document is an ordered list of routes; the first route whose model glob
//! matches the requested model, and whose provider speaks the request's API, wins.
//! Named targets give policy `route` actions a destination that the routing domain
//! owns, so a routing rollback also moves re-routed traffic.
//!
//! ```yaml
//! routes:
//!   - match: "gpt-4o*"          # glob on the requested model
//!     provider: openai          # a provider of the static config
//!     model: gpt-4o-2024-08-06  # optional upstream model name (default: as requested)
//!   - match: "claude-*"
//!     provider: anthropic
//! targets:
//!   small: {provider: openai, model: gpt-4o-mini}
//! models: [gpt-4o, claude-sonnet-4]   # optional: what GET /v1/models lists
//! ```

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::request::Api;

/// The wire protocol a provider speaks; a route only serves requests of its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
}

impl ProviderKind {
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        match name {
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    fn serves(self, api: Api) -> bool {
        match self {
            ProviderKind::Anthropic => api == Api::Messages,
            ProviderKind::OpenAi => api != Api::Messages,
        }
    }
}

/// A routing document that failed to compile; Display names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RoutingError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingDoc {
    #[serde(default)]
    routes: Vec<RouteDoc>,
    #[serde(default)]
    targets: BTreeMap<String, TargetDoc>,
    #[serde(default)]
    models: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDoc {
    #[serde(rename = "match")]
    pattern: String,
    provider: String,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetDoc {
    provider: String,
    #[serde(default)]
    model: Option<String>,
}

struct Route {
    matcher: GlobMatcher,
    provider: String,
    kind: ProviderKind,
    model: Option<String>,
}

struct Target {
    provider: String,
    kind: ProviderKind,
    model: Option<String>,
}

/// Where a request goes: the provider name and the model name to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub provider: String,
    pub model: String,
}

/// Why a request has no destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unroutable {
    /// No route matches the model for this API: the client asked for an unknown model.
    UnknownModel,
    /// A policy named a target the routing document does not define.
    UnknownTarget(String),
}

/// A compiled routing document; immutable, shared by every request of its version.
pub struct Routing {
    routes: Vec<Route>,
    targets: BTreeMap<String, Target>,
    models: Vec<String>,
}

impl Routing {
    /// Compiles a routing document against the providers configured on this host
    /// (`(name, kind)` pairs), so a route to a missing provider is refused up front.
    pub fn compile(
        doc_json: &[u8],
        providers: &[(String, String)],
    ) -> Result<Routing, RoutingError> {
        let de = &mut serde_json::Deserializer::from_slice(doc_json);
        let doc: RoutingDoc = serde_path_to_error::deserialize(de)
            .map_err(|e| RoutingError(format!("{}: {}", e.path(), e.inner())))?;
        let kind_of = |field: &str, provider: &str| -> Result<ProviderKind, RoutingError> {
            providers
                .iter()
                .find(|(name, _)| name == provider)
                .and_then(|(_, kind)| ProviderKind::from_name(kind))
                .ok_or_else(|| RoutingError(format!("{field}: unknown provider {provider:?}")))
        };
        let mut routes = Vec::with_capacity(doc.routes.len());
        for (i, r) in doc.routes.into_iter().enumerate() {
            let matcher = Glob::new(&r.pattern)
                .map_err(|e| RoutingError(format!("routes[{i}].match: {e}")))?
                .compile_matcher();
            let kind = kind_of(&format!("routes[{i}].provider"), &r.provider)?;
            routes.push(Route {
                matcher,
                provider: r.provider,
                kind,
                model: r.model,
            });
        }
        let mut targets = BTreeMap::new();
        for (name, t) in doc.targets {
            let kind = kind_of(&format!("targets.{name}.provider"), &t.provider)?;
            targets.insert(
                name,
                Target {
                    provider: t.provider,
                    kind,
                    model: t.model,
                },
            );
        }
        let models = doc.models.unwrap_or_else(|| {
            let mut listed: Vec<String> = routes
                .iter()
                .map(|r| r.matcher.glob().glob().to_string())
                .filter(|g| !g.contains(['*', '?', '[', '{']))
                .collect();
            listed.dedup();
            listed
        });
        Ok(Routing {
            routes,
            targets,
            models,
        })
    }

    /// Resolves a request; `target` is the name a policy `route` action chose, if any.
    pub fn resolve(
        &self,
        api: Api,
        model: &str,
        target: Option<&str>,
    ) -> Result<Destination, Unroutable> {
        if let Some(name) = target {
            let t = self.targets.get(name).filter(|t| t.kind.serves(api));
            return t
                .map(|t| Destination {
                    provider: t.provider.clone(),
                    model: t.model.clone().unwrap_or_else(|| model.to_string()),
                })
                .ok_or_else(|| Unroutable::UnknownTarget(name.to_string()));
        }
        self.routes
            .iter()
            .find(|r| r.kind.serves(api) && r.matcher.is_match(model))
            .map(|r| Destination {
                provider: r.provider.clone(),
                model: r.model.clone().unwrap_or_else(|| model.to_string()),
            })
            .ok_or(Unroutable::UnknownModel)
    }

    /// The model names this routing version advertises on `GET /v1/models`.
    pub fn models(&self) -> &[String] {
        &self.models
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Vec<(String, String)> {
        vec![
            ("oa".into(), "openai".into()),
            ("an".into(), "anthropic".into()),
        ]
    }

    fn compile(doc: &str) -> Result<Routing, RoutingError> {
        Routing::compile(doc.as_bytes(), &providers())
    }

    const DOC: &str = r#"{
        "routes": [
            {"match": "gpt-4o*", "provider": "oa", "model": "gpt-4o-2024"},
            {"match": "claude-*", "provider": "an"},
            {"match": "*", "provider": "oa"}
        ],
        "targets": {"small": {"provider": "oa", "model": "mini"}}
    }"#;

    #[test]
    fn first_matching_route_of_the_right_protocol_wins() {
        let r = compile(DOC).unwrap();
        let d = r.resolve(Api::Chat, "gpt-4o-mini", None).unwrap();
        assert_eq!(
            d,
            Destination {
                provider: "oa".into(),
                model: "gpt-4o-2024".into()
            }
        );
        let d = r.resolve(Api::Messages, "claude-x", None).unwrap();
        assert_eq!(
            d,
            Destination {
                provider: "an".into(),
                model: "claude-x".into()
            }
        );
        // An OpenAI-style request for a claude model falls through to the catch-all.
        assert_eq!(
            r.resolve(Api::Chat, "claude-x", None).unwrap().provider,
            "oa"
        );
        // No anthropic route matches a gpt model.
        assert_eq!(
            r.resolve(Api::Messages, "gpt-4o", None),
            Err(Unroutable::UnknownModel)
        );
    }

    #[test]
    fn targets_override_routes() {
        let r = compile(DOC).unwrap();
        let d = r.resolve(Api::Chat, "gpt-4o", Some("small")).unwrap();
        assert_eq!(
            d,
            Destination {
                provider: "oa".into(),
                model: "mini".into()
            }
        );
        assert_eq!(
            r.resolve(Api::Chat, "gpt-4o", Some("nope")),
            Err(Unroutable::UnknownTarget("nope".into()))
        );
    }

    #[test]
    fn models_default_to_literal_patterns() {
        let r =
            compile(r#"{"routes":[{"match":"a","provider":"oa"},{"match":"b*","provider":"oa"}]}"#)
                .unwrap();
        assert_eq!(r.models(), ["a".to_string()]);
        let r = compile(r#"{"routes":[],"models":["x","y"]}"#).unwrap();
        assert_eq!(r.models(), ["x".to_string(), "y".to_string()]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = compile(r#"{"routes":[{"match":"a","provider":"zz"}]}"#)
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "routes[0].provider: unknown provider \"zz\"");
        let e = compile(r#"{"routes":[{"match":"a","provder":"oa"}]}"#)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("routes[0].provder: unknown field `provder`"),
            "{e}"
        );
        let e = compile(r#"{"targets":{"t":{"provider":"x"}}}"#)
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "targets.t.provider: unknown provider \"x\"");
        let e = compile(r#"{"routes":[{"match":"a[","provider":"oa"}]}"#)
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("routes[0].match: "), "{e}");
    }
}
