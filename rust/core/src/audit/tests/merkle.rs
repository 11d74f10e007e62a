//! The Merkle tree and its proofs, against the RFC 6962 definitions computed naively here
//! and against the published test vectors.

use sha2::{Digest, Sha256};

use super::*;

/// MTH(D[n]) exactly as RFC 6962 section 2.1 defines it, recursively.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// PATH(m, D[n]), section 2.1.1.
fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = largest_power_of_two_below(n);
    let (mut proof, sibling) = if m < k {
        (path(m, &leaves[..k]), mth(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), mth(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

/// SUBPROOF(m, D[n], b), section 2.1.2.
fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole { Vec::new() } else { vec![mth(leaves)] };
    }
    let k = largest_power_of_two_below(n);
    let (mut proof, sibling) = if m <= k {
        (subproof(m, &leaves[..k], whole), mth(&leaves[k..]))
    } else {
        (subproof(m - k, &leaves[k..], false), mth(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

#[test]
fn roots_match_the_rfc6962_test_vectors() {
    // The eight inputs and roots used by the Certificate Transparency reference tests.
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut frontier = Frontier::new();
    for (input, root) in inputs.iter().zip(roots) {
        frontier.push(leaf_hash(input));
        assert_eq!(
            hex::encode(frontier.root()),
            root,
            "size {}",
            frontier.size()
        );
    }
}

#[test]
fn the_frontier_root_is_mth_at_every_size() {
    let mut frontier = Frontier::new();
    let mut leaves = Vec::new();
    for i in 0..300u32 {
        assert_eq!(frontier.root(), mth(&leaves), "size {i}");
        let leaf = leaf_hash(&i.to_le_bytes());
        frontier.push(leaf);
        leaves.push(leaf);
        assert_eq!(
            frontier.nodes().len(),
            frontier.size().count_ones() as usize
        );
    }
}

/// A chain of `n` records over small segments, and its leaf hashes read back.
fn chain_with_leaves(n: u64) -> (TempDir, Vec<Hash>) {
    let root = TempDir::new().unwrap();
    write_chain(root.path(), n, small_segments());
    let leaves = RecordReader::open(root.path(), CHAIN)
        .unwrap()
        .map(|record| record.unwrap().hash)
        .collect();
    (root, leaves)
}

#[test]
fn inclusion_proofs_are_rfc6962_paths_and_verify() {
    let (root, leaves) = chain_with_leaves(21);
    for size in 1..=21u64 {
        let tree_root = mth(&leaves[..size as usize]);
        for seq in 1..=size {
            let proof = prove_inclusion(root.path(), CHAIN, seq, size).unwrap();
            let index = (seq - 1) as usize;
            assert_eq!(
                proof.hashes,
                path(index, &leaves[..size as usize]),
                "seq {seq} size {size}"
            );
            assert_eq!((proof.root, proof.leaf), (tree_root, leaves[index]));
            assert_eq!(leaf_hash(&proof.record), proof.leaf);
            assert!(verify_inclusion(
                &proof.leaf,
                seq - 1,
                size,
                &proof.hashes,
                &tree_root
            ));
        }
    }
}

#[test]
fn consistency_proofs_are_rfc6962_subproofs_and_verify() {
    let (root, leaves) = chain_with_leaves(21);
    for new in 1..=21usize {
        for old in 1..=new {
            let proof = prove_consistency(root.path(), CHAIN, old as u64, new as u64).unwrap();
            let expected = if old == new {
                Vec::new()
            } else {
                subproof(old, &leaves[..new], true)
            };
            assert_eq!(proof.hashes, expected, "{old} -> {new}");
            assert_eq!(
                (proof.old_root, proof.new_root),
                (mth(&leaves[..old]), mth(&leaves[..new]))
            );
            assert!(verify_consistency(
                old as u64,
                new as u64,
                &proof.old_root,
                &proof.new_root,
                &proof.hashes
            ));
        }
    }
}

#[test]
fn tampered_proofs_fail() {
    let (root, leaves) = chain_with_leaves(13);
    let tree_root = mth(&leaves);
    let proof = prove_inclusion(root.path(), CHAIN, 6, 13).unwrap();
    let verify = |leaf: &Hash, index, size, hashes: &[Hash], root: &Hash| {
        verify_inclusion(leaf, index, size, hashes, root)
    };
    assert!(verify(&proof.leaf, 5, 13, &proof.hashes, &tree_root));
    assert!(
        !verify(&leaves[6], 5, 13, &proof.hashes, &tree_root),
        "another leaf"
    );
    assert!(
        !verify(&proof.leaf, 6, 13, &proof.hashes, &tree_root),
        "another index"
    );
    assert!(
        !verify(&proof.leaf, 5, 7, &proof.hashes, &tree_root),
        "another size"
    );
    assert!(
        !verify(&proof.leaf, 5, 13, &proof.hashes[1..], &tree_root),
        "a hash dropped"
    );
    let mut flipped = proof.hashes.clone();
    flipped[1][0] ^= 1;
    assert!(
        !verify(&proof.leaf, 5, 13, &flipped, &tree_root),
        "a hash changed"
    );
    let mut extended = proof.hashes.clone();
    extended.push(tree_root);
    assert!(
        !verify(&proof.leaf, 5, 13, &extended, &tree_root),
        "a hash added"
    );

    let consistency = prove_consistency(root.path(), CHAIN, 5, 13).unwrap();
    let (old, new) = (consistency.old_root, consistency.new_root);
    assert!(verify_consistency(5, 13, &old, &new, &consistency.hashes));
    assert!(
        !verify_consistency(5, 13, &leaves[0], &new, &consistency.hashes),
        "rewritten history"
    );
    assert!(
        !verify_consistency(6, 13, &old, &new, &consistency.hashes),
        "another old size"
    );
    assert!(
        !verify_consistency(5, 13, &old, &new, &consistency.hashes[1..]),
        "a hash dropped"
    );
    assert!(!verify_consistency(13, 5, &new, &old, &[]), "shrinking");
}

#[test]
fn proofs_outside_the_chain_are_refused() {
    let (root, _) = chain_with_leaves(5);
    for (seq, size) in [(0, 5), (6, 5), (3, 9)] {
        let err = prove_inclusion(root.path(), CHAIN, seq, size).unwrap_err();
        assert!(matches!(err, ProofError::Range(_)), "{seq}/{size}: {err}");
    }
    assert!(matches!(
        prove_consistency(root.path(), CHAIN, 4, 3),
        Err(ProofError::Range(_))
    ));
    assert!(matches!(
        prove_consistency(root.path(), CHAIN, 4, 9),
        Err(ProofError::Range(_))
    ));
}
