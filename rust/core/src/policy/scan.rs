//! One-pass prompt matching for all rules at once.
//!
//! Every rule's regexes go into one `RegexSet` and every keyword into one of two
//! Aho-Corasick automata, so the cost of scanning a segment barely grows with the number
//! of rules. Each pattern remembers the walk index of the rule that owns it.

use std::ops::Range;

use aho_corasick::AhoCorasick;
use regex::RegexSet;

use super::compile::{regex_error_line, PromptPatterns};
use super::PolicyError;

pub(super) struct PromptScanner {
    regexes: Option<RegexSet>,
    /// Owning rule of each pattern in `regexes`, by pattern index.
    regex_owners: Vec<usize>,
    /// Exact and ASCII-case-insensitive keywords; only non-empty automata are kept.
    keywords: Vec<KeywordAutomaton>,
}

struct KeywordAutomaton {
    automaton: AhoCorasick,
    /// Owning rule of each keyword, by pattern id.
    owners: Vec<usize>,
}

#[derive(Default)]
pub(super) struct PromptScannerBuilder {
    regex_sources: Vec<String>,
    regex_owners: Vec<usize>,
    exact: KeywordList,
    folded: KeywordList,
}

#[derive(Default)]
struct KeywordList {
    keywords: Vec<String>,
    owners: Vec<usize>,
}

impl PromptScannerBuilder {
    pub fn add(&mut self, rule: usize, patterns: &PromptPatterns) {
        for source in &patterns.regex_sources {
            self.regex_sources.push(source.clone());
            self.regex_owners.push(rule);
        }
        let list = if patterns.case_insensitive {
            &mut self.folded
        } else {
            &mut self.exact
        };
        for keyword in &patterns.keywords {
            list.keywords.push(keyword.clone());
            list.owners.push(rule);
        }
    }

    pub fn build(self) -> Result<PromptScanner, PolicyError> {
        // Each regex compiled on its own already, so only the combined size can fail here.
        let regexes = if self.regex_sources.is_empty() {
            None
        } else {
            let set = RegexSet::new(&self.regex_sources).map_err(|err| {
                PolicyError::new(
                    "rules",
                    format!("prompt regexes combined: {}", regex_error_line(err)),
                )
            })?;
            Some(set)
        };
        let mut keywords = Vec::with_capacity(2);
        for (list, ascii_case_insensitive) in [(self.exact, false), (self.folded, true)] {
            if list.keywords.is_empty() {
                continue;
            }
            // The default (standard) match kind is the one that supports overlapping
            // search, which reports every keyword that occurs, not just the leftmost.
            let automaton = AhoCorasick::builder()
                .ascii_case_insensitive(ascii_case_insensitive)
                .build(&list.keywords)
                .map_err(|err| {
                    PolicyError::new("rules", format!("prompt keywords combined: {err}"))
                })?;
            keywords.push(KeywordAutomaton {
                automaton,
                owners: list.owners,
            });
        }
        Ok(PromptScanner {
            regexes,
            regex_owners: self.regex_owners,
            keywords,
        })
    }
}

/// Rules (by walk index) whose prompt condition held in at least one segment.
#[derive(Default)]
pub(super) struct PromptHits {
    /// Grown on first hit, so a prompt that matches nothing allocates nothing.
    by_rule: Vec<bool>,
}

impl PromptHits {
    pub fn contains(&self, rule: usize) -> bool {
        self.by_rule.get(rule).copied().unwrap_or(false)
    }

    fn insert(&mut self, rule: usize) {
        if self.by_rule.len() <= rule {
            self.by_rule.resize(rule + 1, false);
        }
        self.by_rule[rule] = true;
    }
}

impl PromptScanner {
    pub fn scan(&self, segments: &[&str]) -> PromptHits {
        let mut hits = PromptHits::default();
        for segment in segments {
            if let Some(set) = &self.regexes {
                // `is_match` first: it allocates nothing, while `matches` always does.
                if set.is_match(segment) {
                    for pattern in set.matches(segment).iter() {
                        hits.insert(self.regex_owners[pattern]);
                    }
                }
            }
            self.for_each_keyword(segment, |rule, _| hits.insert(rule));
        }
        hits
    }

    /// Calls `found(owning rule, byte range)` for every keyword occurrence in `text`,
    /// overlapping ones included.
    pub fn for_each_keyword(&self, text: &str, mut found: impl FnMut(usize, Range<usize>)) {
        for keywords in &self.keywords {
            for occurrence in keywords.automaton.find_overlapping_iter(text) {
                found(
                    keywords.owners[occurrence.pattern().as_usize()],
                    occurrence.range(),
                );
            }
        }
    }
}
