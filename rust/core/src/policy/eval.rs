//! The per-request rule walk.

use super::compile::{Action, Conditions};
use super::scan::PromptHits;
use super::{redact, Decision, Policy, RequestView, Verdict};

pub(super) fn evaluate(policy: &Policy, req: &RequestView<'_>) -> Decision {
    // Scanned on first need: many requests reach a terminal rule, or fail every rule's
    // cheaper conditions, before any rule looks at the prompt.
    let mut prompt_hits: Option<PromptHits> = None;
    let mut matched = Vec::new();
    let mut route = None;
    let mut redacting = Vec::new();
    let mut terminal = None;

    for (index, rule) in policy.rules.iter().enumerate() {
        let holds = rule.conditions.hold(req, || {
            prompt_hits
                .get_or_insert_with(|| policy.scanner.scan(req.segments))
                .contains(index)
        });
        if !holds {
            continue;
        }
        matched.push(rule.id.clone());
        match &rule.action {
            Action::Redact(redaction) => redacting.push((index, redaction)),
            Action::Route { upstream } => {
                route.get_or_insert(upstream);
            }
            Action::Allow => {
                terminal = Some(Verdict::Allow);
                break;
            }
            Action::Deny { status, message } => {
                terminal = Some(Verdict::Deny {
                    status: *status,
                    message: message.clone(),
                    rule: rule.id.clone(),
                });
                break;
            }
        }
    }

    let verdict = terminal.unwrap_or_else(|| policy.default.clone());
    if matches!(verdict, Verdict::Deny { .. }) {
        return Decision {
            verdict,
            matched,
            route: None,
            rewrites: Vec::new(),
        };
    }
    let rewrites = if redacting.is_empty() {
        Vec::new()
    } else {
        redact::rewrite(&policy.scanner, &redacting, req.segments)
    };
    Decision {
        verdict,
        matched,
        route: route.cloned(),
        rewrites,
    }
}

impl Conditions {
    /// Cheapest checks first; `prompt_matches` runs only if everything else holds.
    fn hold(&self, req: &RequestView<'_>, prompt_matches: impl FnOnce() -> bool) -> bool {
        if let Some(routes) = &self.routes {
            if !routes.contains(&req.route) {
                return false;
            }
        }
        if let Some(tenants) = &self.tenants {
            if !tenants.iter().any(|tenant| tenant == req.tenant) {
                return false;
            }
        }
        if let Some(models) = &self.models {
            if !models.is_match(req.model) {
                return false;
            }
        }
        let headers_hold = self.headers.iter().all(|condition| {
            req.headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case(&condition.name) && condition.values.is_match(value)
            })
        });
        headers_hold && (!self.prompt || prompt_matches())
    }
}
