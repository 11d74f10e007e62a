//! Rewriting prompt segments for the `redact` rules that matched.

use super::compile::Redaction;
use super::scan::PromptScanner;

/// A byte range to replace, tagged with the position in walk order (among the
/// redactions being applied) of the rule that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    order: usize,
}

/// Returns `(segment index, new text)` for each segment changed by `redacting`, the
/// matched redact rules as `(walk index, redaction)` in walk order.
pub(super) fn rewrite(
    scanner: &PromptScanner,
    redacting: &[(usize, &Redaction)],
    segments: &[&str],
) -> Vec<(usize, String)> {
    let mut rewrites = Vec::new();
    let mut spans = Vec::new();
    for (segment_index, text) in segments.iter().enumerate() {
        spans.clear();
        for (order, (_, redaction)) in redacting.iter().enumerate() {
            for regex in &redaction.regexes {
                spans.extend(regex.find_iter(text).map(|found| Span {
                    start: found.start(),
                    end: found.end(),
                    order,
                }));
            }
        }
        scanner.for_each_keyword(text, |rule, range| {
            if let Ok(order) = redacting.binary_search_by_key(&rule, |(walk_index, _)| *walk_index)
            {
                spans.push(Span {
                    start: range.start,
                    end: range.end,
                    order,
                });
            }
        });
        // Empty matches (from a regex such as `x*`) have nothing to replace.
        spans.retain(|span| span.start < span.end);
        if spans.is_empty() {
            continue;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied_up_to = 0;
        for span in merge(&mut spans) {
            out.push_str(&text[copied_up_to..span.start]);
            out.push_str(&redacting[span.order].1.replacement);
            copied_up_to = span.end;
        }
        out.push_str(&text[copied_up_to..]);
        rewrites.push((segment_index, out));
    }
    rewrites
}

/// Sorts `spans` and joins overlapping or touching ones; a joined span keeps the
/// earliest rule in walk order, whose replacement therefore wins.
fn merge(spans: &mut [Span]) -> Vec<Span> {
    spans.sort_unstable_by_key(|span| (span.start, span.end));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for &span in spans.iter() {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => {
                last.end = last.end.max(span.end);
                last.order = last.order.min(span.order);
            }
            _ => merged.push(span),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::{merge, Span};

    fn span(start: usize, end: usize, order: usize) -> Span {
        Span { start, end, order }
    }

    #[test]
    fn merge_joins_overlapping_and_touching_spans_keeping_the_earliest_rule() {
        let mut spans = vec![
            span(10, 14, 3),
            span(0, 4, 2),
            span(2, 6, 1),
            span(6, 8, 5),
            span(20, 22, 4),
        ];
        assert_eq!(
            merge(&mut spans),
            vec![span(0, 8, 1), span(10, 14, 3), span(20, 22, 4)]
        );
    }

    #[test]
    fn merge_widens_to_cover_a_contained_span_and_takes_its_earlier_rule() {
        let mut spans = vec![span(0, 10, 2), span(3, 5, 0)];
        assert_eq!(merge(&mut spans), vec![span(0, 10, 0)]);
    }
}
