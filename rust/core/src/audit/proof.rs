//! Inclusion and consistency proofs (RFC 6962 section 2.1), built from a chain on disk.
//!
//! A proof's hashes are roots of disjoint subtrees. They are planned first, then filled in
//! one pass over the chain, so memory stays O(log² n) however long the chain is. Subtrees
//! wholly before the first kept segment come from its header's frontier; a proof that needs
//! anything finer from there cannot be built any more.

use std::path::Path;

use super::chain::VerifyFailure;
use super::merkle::{node_hash, split_point, Frontier, Hash};
use super::reader::RecordReader;

/// Record `seq`'s leaf is leaf `seq - 1` of the tree of `size` leaves with root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub seq: u64,
    pub size: u64,
    /// The record's payload, whose leaf hash the proof starts from.
    pub record: Vec<u8>,
    pub leaf: Hash,
    /// From the leaf's sibling up to the root's child.
    pub hashes: Vec<Hash>,
    pub root: Hash,
}

/// The tree of `old_size` leaves is a prefix of the tree of `new_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Hash,
    pub new_root: Hash,
    pub hashes: Vec<Hash>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    Chain(#[from] VerifyFailure),
    #[error("{0}")]
    Range(String),
    #[error("records before seq {0} were removed by retention; the proof needs them")]
    Pruned(u64),
}

/// Proves record `seq` is in the tree of the chain's first `size` records.
pub fn prove_inclusion(
    root: &Path,
    chain: &str,
    seq: u64,
    size: u64,
) -> Result<InclusionProof, ProofError> {
    if seq == 0 || seq > size {
        return Err(ProofError::Range(format!(
            "seq {seq} is not in a tree of {size} records"
        )));
    }
    let mut reader = RecordReader::open(root, chain)?;
    let mut plan = Plan::new(reader.tree().clone());
    let mut hashes = Vec::new();
    plan.path(seq - 1, 0, size, &mut hashes)?;
    let streamed = plan.stream(&mut reader, size, seq, 0)?;
    let (record, leaf) = streamed
        .record
        .ok_or(ProofError::Pruned(reader.first_seq()))?;
    Ok(InclusionProof {
        seq,
        size,
        record,
        leaf,
        hashes: plan.evaluate(&hashes),
        root: reader.tree().root(),
    })
}

/// Proves the chain's first `old_size` records are a prefix of its first `new_size`.
pub fn prove_consistency(
    root: &Path,
    chain: &str,
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyProof, ProofError> {
    if old_size > new_size {
        return Err(ProofError::Range(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    let mut reader = RecordReader::open(root, chain)?;
    let base = reader.tree().clone();
    if old_size < base.size() {
        return Err(ProofError::Pruned(base.size() + 1));
    }
    let mut plan = Plan::new(base.clone());
    let mut hashes = Vec::new();
    if 0 < old_size && old_size < new_size {
        plan.subproof(old_size, 0, new_size, true, &mut hashes)?;
    }
    let streamed = plan.stream(&mut reader, new_size, 0, old_size)?;
    let old_root = match streamed.root_at {
        Some(root) => root,
        None => base.root(), // old_size is the base's size: nothing before it was streamed
    };
    Ok(ConsistencyProof {
        old_size,
        new_size,
        old_root,
        new_root: reader.tree().root(),
        hashes: plan.evaluate(&hashes),
    })
}

/// How one proof hash is obtained.
enum Part {
    /// A node of the first kept segment's frontier.
    Known(Hash),
    /// The root of the leaves in `Plan::ranges[i]`, accumulated while streaming.
    Leaves(usize),
    Node(Box<Part>, Box<Part>),
}

/// What [`Plan::stream`] kept besides the proof's leaves.
struct Streamed {
    record: Option<(Vec<u8>, Hash)>,
    root_at: Option<Hash>,
}

struct Plan {
    base: Frontier,
    ranges: Vec<(u64, u64)>,
    sums: Vec<Frontier>,
}

impl Plan {
    fn new(base: Frontier) -> Plan {
        Plan {
            base,
            ranges: Vec::new(),
            sums: Vec::new(),
        }
    }

    /// MTH(D[lo:hi]), from the base frontier where the range is before it.
    fn subtree(&mut self, lo: u64, hi: u64) -> Result<Part, ProofError> {
        if lo >= self.base.size() {
            self.ranges.push((lo, hi));
            self.sums.push(Frontier::new());
            return Ok(Part::Leaves(self.ranges.len() - 1));
        }
        if let Some(node) = self.base.node_at(lo, hi) {
            return Ok(Part::Known(node));
        }
        if hi <= self.base.size() {
            return Err(ProofError::Pruned(self.base.size() + 1));
        }
        let k = split_point(hi - lo);
        Ok(Part::Node(
            Box::new(self.subtree(lo, lo + k)?),
            Box::new(self.subtree(lo + k, hi)?),
        ))
    }

    /// RFC 6962 PATH(m, D[lo:hi]), leaf first.
    fn path(&mut self, m: u64, lo: u64, hi: u64, out: &mut Vec<Part>) -> Result<(), ProofError> {
        if hi - lo <= 1 {
            return Ok(());
        }
        let k = split_point(hi - lo);
        if m < lo + k {
            self.path(m, lo, lo + k, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.path(m, lo + k, hi, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }

    /// RFC 6962 SUBPROOF(m, D[lo:hi], whole), with `m` counted from the start of the tree.
    fn subproof(
        &mut self,
        m: u64,
        lo: u64,
        hi: u64,
        whole: bool,
        out: &mut Vec<Part>,
    ) -> Result<(), ProofError> {
        if m == hi {
            if !whole {
                out.push(self.subtree(lo, hi)?);
            }
            return Ok(());
        }
        let k = split_point(hi - lo);
        if m <= lo + k {
            self.subproof(m, lo, lo + k, whole, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.subproof(m, lo + k, hi, false, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }

    /// Reads the chain up to record `size`, feeding each leaf to the ranges that hold it;
    /// keeps the payload of record `record_seq` and the root at size `root_at`.
    fn stream(
        &mut self,
        reader: &mut RecordReader,
        size: u64,
        record_seq: u64,
        root_at: u64,
    ) -> Result<Streamed, ProofError> {
        let mut streamed = Streamed {
            record: None,
            root_at: None,
        };
        while reader.seq() < size {
            let seq = reader.seq() + 1;
            let payload = match reader.next_payload()? {
                Some((payload, _)) => (seq == record_seq).then(|| payload.to_vec()),
                None => {
                    return Err(ProofError::Range(format!(
                        "the chain has {} records, not {size}",
                        reader.seq()
                    )));
                }
            };
            let leaf = reader.head();
            if let Some(payload) = payload {
                streamed.record = Some((payload, leaf));
            }
            for (&(lo, hi), sum) in self.ranges.iter().zip(&mut self.sums) {
                if (lo..hi).contains(&(seq - 1)) {
                    sum.push(leaf);
                }
            }
            if seq == root_at {
                streamed.root_at = Some(reader.tree().root());
            }
        }
        Ok(streamed)
    }

    fn evaluate(&self, parts: &[Part]) -> Vec<Hash> {
        parts.iter().map(|part| self.value(part)).collect()
    }

    fn value(&self, part: &Part) -> Hash {
        match part {
            Part::Known(hash) => *hash,
            Part::Leaves(i) => self.sums[*i].root(),
            Part::Node(left, right) => node_hash(&self.value(left), &self.value(right)),
        }
    }
}
