//! Routing: which upstream provider and model serve a request.
//!
//! A routing document is an ordered list of routes; the first route whose model glob
//! matches the requested model, and whose provider speaks the request's API, wins.
//! Named targets give policy `route` actions a destination that the routing domain
//! owns, so a routing rollback also moves re-routed traffic.
//!
//! A chat (OpenAI) or messages (Anthropic) request that no route of its own protocol
//! matches goes to the first matching route of the other protocol, translated by the
//! serving layer; `translate: false` pins a route or target to its own protocol.
//!
//! Fallbacks are where a request goes next when a provider fails it before answering
//! (unreachable, timed out, or a 429/5xx status): in order, each with the primary's
//! upstream model unless it names its own, of either protocol (translated) where the
//! request's API has a translation; one that cannot serve the request's API is left out.
//!
//! ```yaml
//! routes:
//!   - match: "gpt-4o*"          # glob on the requested model
//!     provider: openai          # a provider of the static config
//!     model: gpt-4o-2024-08-06  # optional upstream model name (default: as requested)
//!     fallbacks: [{provider: azure}, {provider: anthropic, model: claude-sonnet-4}]
//!   - match: "claude-*"
//!     provider: anthropic
//!     translate: false          # only /v1/messages requests, never translated ones
//! targets:
//!   small: {provider: openai, model: gpt-4o-mini, fallbacks: [{provider: azure}]}
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

    /// Whether the provider speaks `api` itself.
    fn serves(self, api: Api) -> bool {
        match self {
            ProviderKind::Anthropic => api == Api::Messages,
            ProviderKind::OpenAi => api != Api::Messages,
        }
    }

    /// Whether the provider serves `api`, itself or through a translation (only chat and
    /// messages translate, into each other).
    fn reaches(self, api: Api, translate: bool) -> bool {
        self.serves(api) || (translate && matches!(api, Api::Chat | Api::Messages))
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
    #[serde(default)]
    fallbacks: Vec<FallbackDoc>,
    #[serde(default = "translates")]
    translate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetDoc {
    provider: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    fallbacks: Vec<FallbackDoc>,
    #[serde(default = "translates")]
    translate: bool,
}

fn translates() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackDoc {
    provider: String,
    #[serde(default)]
    model: Option<String>,
}

/// Where a route or target sends requests: a provider, an optional model, fallbacks.
struct Upstream {
    provider: String,
    kind: ProviderKind,
    model: Option<String>,
    fallbacks: Vec<(String, ProviderKind, Option<String>)>,
    /// Whether requests of the other protocol may come here translated.
    translate: bool,
}

impl Upstream {
    fn destination(&self, api: Api, requested: &str) -> Destination {
        let model = self.model.clone().unwrap_or_else(|| requested.to_string());
        let fallbacks = self
            .fallbacks
            .iter()
            .filter(|(_, kind, _)| kind.reaches(api, self.translate))
            .map(|(provider, _, m)| (provider.clone(), m.clone().unwrap_or_else(|| model.clone())))
            .collect();
        Destination {
            provider: self.provider.clone(),
            model,
            fallbacks,
        }
    }
}

struct Route {
    matcher: GlobMatcher,
    upstream: Upstream,
}

/// Where a request goes: the provider name and the model name to send upstream, then
/// the (provider, model) fallbacks to try in order if that provider fails it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub provider: String,
    pub model: String,
    pub fallbacks: Vec<(String, String)>,
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
    /// This compilation's process-unique id (see [`crate::compiled_id`]).
    id: u64,
    routes: Vec<Route>,
    targets: BTreeMap<String, Upstream>,
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
        // A pinned route's fallbacks must speak its protocol: nothing of it is translated.
        let upstream = |field: String,
                        provider: String,
                        model: Option<String>,
                        fallbacks: Vec<FallbackDoc>,
                        translate: bool|
         -> Result<Upstream, RoutingError> {
            let kind = kind_of(&format!("{field}.provider"), &provider)?;
            let mut alternatives = Vec::with_capacity(fallbacks.len());
            for (j, f) in fallbacks.into_iter().enumerate() {
                let at = format!("{field}.fallbacks[{j}].provider");
                let fallback_kind = kind_of(&at, &f.provider)?;
                if !translate && fallback_kind != kind {
                    return Err(RoutingError(format!(
                        "{at}: {:?} does not speak the protocol of {provider:?} (translate: false)",
                        f.provider
                    )));
                }
                alternatives.push((f.provider, fallback_kind, f.model));
            }
            Ok(Upstream {
                provider,
                kind,
                model,
                fallbacks: alternatives,
                translate,
            })
        };
        let mut routes = Vec::with_capacity(doc.routes.len());
        for (i, r) in doc.routes.into_iter().enumerate() {
            let matcher = Glob::new(&r.pattern)
                .map_err(|e| RoutingError(format!("routes[{i}].match: {e}")))?
                .compile_matcher();
            let upstream = upstream(
                format!("routes[{i}]"),
                r.provider,
                r.model,
                r.fallbacks,
                r.translate,
            )?;
            routes.push(Route { matcher, upstream });
        }
        let mut targets = BTreeMap::new();
        for (name, t) in doc.targets {
            let compiled = upstream(
                format!("targets.{name}"),
                t.provider,
                t.model,
                t.fallbacks,
                t.translate,
            )?;
            targets.insert(name, compiled);
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
            id: crate::compiled_id(),
            routes,
            targets,
            models,
        })
    }

    /// This compilation's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves a request; `target` is the name a policy `route` action chose, if any.
    /// A route of the request's own protocol wins over one reached by translation.
    pub fn resolve(
        &self,
        api: Api,
        model: &str,
        target: Option<&str>,
    ) -> Result<Destination, Unroutable> {
        if let Some(name) = target {
            let t = self
                .targets
                .get(name)
                .filter(|t| t.kind.reaches(api, t.translate));
            return t
                .map(|t| t.destination(api, model))
                .ok_or_else(|| Unroutable::UnknownTarget(name.to_string()));
        }
        let matching = |r: &&Route, translated: bool| {
            let u = &r.upstream;
            let speaks = if translated {
                u.kind.reaches(api, u.translate)
            } else {
                u.kind.serves(api)
            };
            speaks && r.matcher.is_match(model)
        };
        self.routes
            .iter()
            .find(|r| matching(r, false))
            .or_else(|| self.routes.iter().find(|r| matching(r, true)))
            .map(|r| r.upstream.destination(api, model))
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
                model: "gpt-4o-2024".into(),
                fallbacks: vec![]
            }
        );
        let d = r.resolve(Api::Messages, "claude-x", None).unwrap();
        assert_eq!(
            d,
            Destination {
                provider: "an".into(),
                model: "claude-x".into(),
                fallbacks: vec![]
            }
        );
        // An OpenAI-style request for a claude model falls through to the catch-all.
        assert_eq!(
            r.resolve(Api::Chat, "claude-x", None).unwrap().provider,
            "oa"
        );
        // A messages request for a gpt model goes to the OpenAI route, translated.
        assert_eq!(
            r.resolve(Api::Messages, "gpt-4o", None).unwrap().provider,
            "oa"
        );
        // Completions and embeddings have no translation.
        let only_anthropic = compile(r#"{"routes": [{"match": "c*", "provider": "an"}]}"#).unwrap();
        assert_eq!(
            only_anthropic
                .resolve(Api::Chat, "claude-x", None)
                .unwrap()
                .provider,
            "an"
        );
        assert_eq!(
            only_anthropic.resolve(Api::Completions, "claude-x", None),
            Err(Unroutable::UnknownModel)
        );
    }

    #[test]
    fn a_pinned_route_serves_only_its_own_protocol() {
        let doc = r#"{"routes": [{"match": "claude-*", "provider": "an", "translate": false}],
                      "targets": {"t": {"provider": "an", "translate": false}}}"#;
        let r = compile(doc).unwrap();
        assert_eq!(
            r.resolve(Api::Messages, "claude-x", None).unwrap().provider,
            "an"
        );
        assert_eq!(
            r.resolve(Api::Chat, "claude-x", None),
            Err(Unroutable::UnknownModel)
        );
        assert_eq!(
            r.resolve(Api::Chat, "claude-x", Some("t")),
            Err(Unroutable::UnknownTarget("t".into()))
        );
        let mixed = r#"{"routes": [{"match": "*", "provider": "oa", "translate": false,
                                    "fallbacks": [{"provider": "an"}]}]}"#;
        assert_eq!(
            compile(mixed).err().unwrap().to_string(),
            "routes[0].fallbacks[0].provider: \"an\" does not speak the protocol of \"oa\" (translate: false)"
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
                model: "mini".into(),
                fallbacks: vec![]
            }
        );
        assert_eq!(
            r.resolve(Api::Chat, "gpt-4o", Some("nope")),
            Err(Unroutable::UnknownTarget("nope".into()))
        );
    }

    #[test]
    fn fallbacks_follow_in_order_with_the_primary_model_unless_they_name_one() {
        let providers = vec![
            ("oa".to_string(), "openai".to_string()),
            ("az".to_string(), "openai".to_string()),
            ("an".to_string(), "anthropic".to_string()),
        ];
        let doc = r#"{
            "routes": [{"match": "gpt-*", "provider": "oa", "model": "gpt-4o-2024",
                        "fallbacks": [{"provider": "az"}, {"provider": "oa", "model": "mini"}]}],
            "targets": {"t": {"provider": "az", "fallbacks": [{"provider": "oa"}]}}
        }"#;
        let r = Routing::compile(doc.as_bytes(), &providers).unwrap();
        let d = r.resolve(Api::Chat, "gpt-4o", None).unwrap();
        assert_eq!(
            d.fallbacks,
            [
                ("az".to_string(), "gpt-4o-2024".to_string()),
                ("oa".to_string(), "mini".to_string())
            ]
        );
        let d = r.resolve(Api::Chat, "gpt-4o", Some("t")).unwrap();
        assert_eq!((d.provider.as_str(), d.model.as_str()), ("az", "gpt-4o"));
        assert_eq!(d.fallbacks, [("oa".to_string(), "gpt-4o".to_string())]);
        // Fallbacks may cross protocols where the request's API translates.
        let mixed =
            r#"{"routes": [{"match": "*", "provider": "oa", "fallbacks": [{"provider": "an"}]}]}"#;
        let r = Routing::compile(mixed.as_bytes(), &providers).unwrap();
        let d = r.resolve(Api::Chat, "gpt-4o", None).unwrap();
        assert_eq!(d.fallbacks, [("an".to_string(), "gpt-4o".to_string())]);
        let d = r.resolve(Api::Embeddings, "gpt-4o", None).unwrap();
        assert!(d.fallbacks.is_empty());
        let unknown =
            r#"{"targets": {"t": {"provider": "oa", "fallbacks": [{"provider": "zz"}]}}}"#;
        let e = Routing::compile(unknown.as_bytes(), &providers)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "targets.t.fallbacks[0].provider: unknown provider \"zz\""
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
