//! Sampling leaves: an even spread in hash order, read in rounds, their names counted and hashed.

use super::*;

/// Round `r` of an even spread of `k` indices over `0..n`. Round 0 takes the middle of each of `k` equal
/// slices; later rounds take points between earlier ones (0.5, 0.25, 0.75, 0.125, ... of a slice), so any
/// number of rounds stays evenly spread and never repeats an index while slices are wide enough.
pub(super) fn spread(n: usize, k: usize, round: usize) -> Vec<usize> {
    if n <= k {
        return if round == 0 {
            (0..n).collect()
        } else {
            Vec::new()
        };
    }
    let phase = van_der_corput(round as u32 + 1);
    (0..k)
        .map(|i| (((i as f64 + phase) * n as f64 / k as f64) as usize).min(n - 1))
        .collect()
}

pub(super) fn van_der_corput(mut i: u32) -> f64 {
    let (mut v, mut f) = (0.0, 0.5);
    while i > 0 {
        if i & 1 == 1 {
            v += f;
        }
        i >>= 1;
        f /= 2.0;
    }
    v
}

/// What the names of a directory hash with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hashing {
    /// The superblock's `s_flags` (signed or unsigned hash).
    pub(super) s_flags: u32,
    pub(super) seed: [u32; 4],
    /// Why names are not hashed, when they are not.
    pub(super) skip: Option<&'static str>,
}

/// The leaves read: the spread sample for the estimate and a sample of the leaves under full index paths.
pub(super) struct Samples {
    pub(super) spread: Vec<usize>,
    /// Parsed leaves by leaf index; `None` when the leaf could not be read.
    pub(super) leaves: std::collections::BTreeMap<usize, Option<Leaf>>,
    pub(super) problems: Vec<String>,
    pub(super) rereads: u64,
    /// The hash names are checked with, when they are.
    pub(super) hash: Option<DirHash>,
    pub(super) hash_check: HashCheck,
    /// Leaves that may still be hashed.
    pub(super) hash_leaves_left: usize,
}

impl Samples {
    /// Reads leaf `k`; with `hash`, its names are checked against its hash range.
    pub(super) fn read(
        &mut self,
        reader: &BlockReader,
        g: &Geometry,
        seed: Option<u32>,
        t: &Tree,
        k: usize,
        hash: bool,
    ) {
        if self.leaves.contains_key(&k) {
            return;
        }
        let block = t.leaves[k].block;
        // A name belongs here if its hash is at least the entry's (its low bit, "continued", cleared) and below
        // the next leaf's entry.
        let (lo, hi) = (t.leaves[k].lo & !1, t.leaf_hi(k));
        let dh = self.hash.filter(|_| hash);
        let mut misfiled = MisfiledLeaf {
            block,
            lo,
            hi,
            names: 0,
            names_outside: 0,
            sample: Vec::new(),
        };
        let parsed = read_parsed(reader, block, &mut self.rereads, |b| {
            misfiled.names = 0;
            misfiled.names_outside = 0;
            misfiled.sample.clear();
            dx::parse_leaf_names(b, g, seed, |name| {
                let Some(h) = dh.and_then(|d| d.hash(name)) else {
                    return;
                };
                misfiled.names += 1;
                if h < lo || u64::from(h) >= hi {
                    misfiled.names_outside += 1;
                    if misfiled.sample.len() < MISFILED_NAMES_SHOWN {
                        let mut shown = name.escape_ascii().to_string();
                        shown.truncate(80);
                        misfiled.sample.push(MisfiledName {
                            name: shown,
                            hash: h,
                        });
                    }
                }
            })
        });
        match parsed {
            Ok(l) => {
                if dh.is_some() {
                    let c = &mut self.hash_check;
                    c.leaves_checked += 1;
                    c.names_checked += u64::from(misfiled.names);
                    c.names_outside += u64::from(misfiled.names_outside);
                    if misfiled.names_outside > 0 {
                        c.leaves_outside += 1;
                        if c.leaves.len() < MISFILED_LEAVES_SHOWN {
                            c.leaves.push(misfiled);
                        }
                    }
                }
                self.leaves.insert(k, Some(l));
            }
            Err(e) => {
                self.problems.push(format!("leaf {e}"));
                self.leaves.insert(k, None);
            }
        }
    }

    /// Reads the leaves `ks`, their blocks requested from the device together.
    pub(super) fn read_all(
        &mut self,
        reader: &BlockReader,
        g: &Geometry,
        seed: Option<u32>,
        t: &Tree,
        ks: &[usize],
    ) {
        reader.prefetch(
            ks.iter()
                .filter(|k| !self.leaves.contains_key(k))
                .map(|&k| u64::from(t.leaves[k].block)),
        );
        // The leaves hashed: as many as are left to hash, spread evenly over `ks`.
        let m = self.hash_leaves_left.min(ks.len());
        self.hash_leaves_left -= m;
        for (i, &k) in ks.iter().enumerate() {
            let hash = (i + 1) * m / ks.len() > i * m / ks.len();
            self.read(reader, g, seed, t, k, hash);
        }
    }

    /// Live entries per leaf over the spread sample: mean and relative standard error of the mean.
    pub(super) fn per_leaf(&self) -> (f64, f64) {
        let live: Vec<f64> = self
            .spread
            .iter()
            .filter_map(|k| self.leaves.get(k).and_then(Option::as_ref))
            .map(|l| f64::from(l.live))
            .collect();
        let m = live.len() as f64;
        if live.len() < 2 {
            return (live.first().copied().unwrap_or(0.0), f64::INFINITY);
        }
        let mean = live.iter().sum::<f64>() / m;
        let var = live.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0);
        let rse = if mean > 0.0 {
            (var / m).sqrt() / mean
        } else {
            0.0
        };
        (mean, rse)
    }
}

/// Reads leaves: all of them when there are at most `max_sample_leaves`; else rounds of an even spread in hash
/// order until the mean entries per leaf has a relative standard error of at most `target_rse` (or the cap is
/// reached); then a spread of the leaves under full index paths, which decide which creates fail.
pub(super) fn read_samples(
    reader: &BlockReader,
    g: &Geometry,
    seed: Option<u32>,
    t: &Tree,
    opts: &Options,
    hashing: Hashing,
) -> Samples {
    let version = hash::effective_version(t.root.hash_version, hashing.s_flags);
    let mut hash_check = HashCheck {
        hash: Some(hash_name(version)),
        ..HashCheck::default()
    };
    let h = DirHash {
        version,
        seed: hashing.seed,
    };
    let hash = match hashing.skip {
        Some(why) => {
            hash_check.skipped = Some(why.to_string());
            None
        }
        None if h.hash(b"").is_none() => {
            hash_check.skipped = Some(format!(
                "wonk does not compute the {} hash",
                hash_name(version)
            ));
            None
        }
        None => Some(h),
    };
    let mut s = Samples {
        spread: Vec::new(),
        leaves: Default::default(),
        problems: Vec::new(),
        rereads: 0,
        hash,
        hash_check,
        hash_leaves_left: HASH_CHECK_LEAVES,
    };
    let n = t.leaves.len();
    let round_size = if n <= opts.max_sample_leaves {
        n
    } else {
        opts.sample_leaves.max(2)
    };
    let mut round = 0;
    while s.spread.len() < n.min(opts.max_sample_leaves.max(round_size)) {
        let fresh: Vec<usize> = spread(n, round_size, round)
            .into_iter()
            .filter(|k| !s.spread.contains(k))
            .collect();
        round += 1;
        if fresh.is_empty() {
            if round > 64 {
                break;
            }
            continue;
        }
        s.read_all(reader, g, seed, t, &fresh);
        s.spread.extend(fresh);
        if s.per_leaf().1 <= opts.target_rse {
            break;
        }
    }
    let fp_leaves: Vec<usize> = t
        .bottom
        .iter()
        .filter(|&&b| t.path_full(b))
        .flat_map(|&b| t.nodes[b].leaves.clone())
        .collect();
    let fp_round = if fp_leaves.len() <= opts.max_sample_leaves {
        fp_leaves.len()
    } else {
        opts.sample_leaves
    };
    let fp: Vec<usize> = spread(fp_leaves.len(), fp_round, 0)
        .into_iter()
        .map(|i| fp_leaves[i])
        .collect();
    s.read_all(reader, g, seed, t, &fp);
    s
}
