//! From the blocks read to the report: entries, the create-failure share, and the headroom model.

use super::*;

pub(super) fn summarize(
    t: &Tree,
    s: &Samples,
    g: &Geometry,
    max_levels: u8,
    opts: &Options,
    retries: u64,
) -> IndexReport {
    let levels = t.root.indirect_levels;
    let node_levels = (1..=levels)
        .map(|level| {
            let mut counts: Vec<u16> = t
                .nodes
                .iter()
                .filter(|n| n.level == level)
                .map(|n| n.count)
                .collect();
            counts.sort_unstable();
            LevelStats {
                level,
                nodes: counts.len() as u64,
                limit: g.node_limit(),
                count_min: counts.first().copied().unwrap_or(0),
                count_median: counts.get(counts.len() / 2).copied().unwrap_or(0),
                count_max: counts.last().copied().unwrap_or(0),
                full: counts.iter().filter(|&&c| c == g.node_limit()).count() as u64,
            }
        })
        .collect();

    let n_leaves = t.leaves.len() as u64;
    let sampled: Vec<&Leaf> = s
        .spread
        .iter()
        .filter_map(|k| s.leaves.get(k).and_then(Option::as_ref))
        .collect();
    let sampled_entries: u64 = sampled.iter().map(|l| u64::from(l.live)).sum();
    let per_leaf_mean = if sampled.is_empty() {
        0.0
    } else {
        sampled_entries as f64 / sampled.len() as f64
    };
    let exact = sampled.len() as u64 == n_leaves;
    let mut names: Vec<u8> = sampled
        .iter()
        .flat_map(|l| l.name_lens.iter().copied())
        .collect();
    names.sort_unstable();
    let name_len_median = names.get(names.len() / 2).map(|&n| u32::from(n));
    let entries = EntryEstimate {
        estimate: if exact {
            sampled_entries
        } else {
            (per_leaf_mean * n_leaves as f64).round() as u64
        },
        exact,
        sampled_leaves: sampled.len() as u64,
        sampled_entries,
        per_leaf_mean,
        relative_std_error: if exact { 0.0 } else { s.per_leaf().1 },
        name_len_median,
        name_len_max: names.last().map(|&n| u32::from(n)),
    };

    let (name_len, name_len_source) = match (opts.name_len, name_len_median) {
        (Some(l), _) => (l.clamp(1, 255), "given"),
        (None, Some(m)) => (m.max(1) as usize, "median of sampled names"),
        (None, None) => (
            255,
            "default (no names sampled): the longest name ext4 allows",
        ),
    };
    let create_failure = failing(t, s, g, max_levels, name_len, name_len_source);
    let headroom = headroom(t, &sampled, g, max_levels, &entries, &create_failure);

    let blocks = if opts.list_index_blocks {
        t.nodes
            .iter()
            .map(|n| IndexBlock {
                level: n.level,
                block: n.block,
                count: n.count,
                limit: n.limit,
            })
            .collect()
    } else {
        Vec::new()
    };
    IndexReport {
        hash_version: t.root.hash_version,
        hash: s.hash_check.hash.unwrap_or(hash_name(t.root.hash_version)),
        levels,
        max_levels,
        root: Fill {
            count: t.root.index.count,
            limit: t.root.index.limit,
            full: t.root.index.count == t.root.index.limit,
        },
        node_levels,
        index_blocks: t.nodes.len() as u64,
        leaf_blocks: n_leaves,
        entries,
        create_failure,
        headroom,
        reads: Reads {
            index_blocks: t.nodes.len() as u64,
            leaf_blocks: s.leaves.len() as u64,
            rereads: t.rereads + s.rereads,
            retries,
        },
        problems: s.problems.clone(),
        hash_check: s.hash_check.clone(),
        blocks,
    }
}

pub(super) fn failing(
    t: &Tree,
    s: &Samples,
    g: &Geometry,
    max_levels: u8,
    name_len: usize,
    name_len_source: &'static str,
) -> CreateFailure {
    let at_max = t.root.indirect_levels + 1 == max_levels;
    let mut fp_width = 0u64;
    let mut fp_leaves = 0u64;
    for &b in &t.bottom {
        if t.path_full(b) {
            for k in t.nodes[b].leaves.clone() {
                fp_width += t.leaf_width(k);
                fp_leaves += 1;
            }
        }
    }
    // Leaves read under full paths: whether the name fits, weighted by the hash width each covers.
    let (mut read_w, mut no_room_w, mut read_n) = (0u64, 0u64, 0u64);
    for (&k, leaf) in &s.leaves {
        let Some(leaf) = leaf else { continue };
        if !t.path_full(t.leaves[k].bottom as usize) {
            continue;
        }
        read_n += 1;
        read_w += t.leaf_width(k);
        if !leaf.fits(g, name_len) {
            no_room_w += t.leaf_width(k);
        }
    }
    let share = |w: f64| w / HASH_SPACE as f64;
    let (failing_share, method) = if !at_max {
        (
            0.0,
            format!(
                "no create fails yet: the index has {} of {max_levels} levels, and a full root makes it grow one",
                t.root.indirect_levels + 1
            ),
        )
    } else if fp_leaves == 0 {
        (
            0.0,
            "no index path is full, so every leaf can still split".to_string(),
        )
    } else if read_n == fp_leaves {
        (
            share(no_room_w as f64),
            format!("exact: all {fp_leaves} leaves under full index paths were read"),
        )
    } else if read_w == 0 {
        (
            share(fp_width as f64),
            "upper bound: no leaf under a full index path could be read, so all are taken to be full".into(),
        )
    } else {
        let p = no_room_w as f64 / read_w as f64;
        (
            share(no_room_w as f64 + p * (fp_width - read_w) as f64),
            format!(
                "estimated: {read_n} of {fp_leaves} leaves under full index paths were read; {:.1}% of their \
                 hash width has no room for the name, and the unread ones are taken to be the same",
                p * 100.0
            ),
        )
    };
    CreateFailure {
        name_len,
        name_len_source,
        rec_len: g.rec_len(name_len),
        at_max_levels: at_max,
        full_path_share: share(fp_width as f64),
        failing_share,
        full_path_leaves: fp_leaves,
        full_path_leaves_read: read_n,
        method,
    }
}

pub(super) fn headroom(
    t: &Tree,
    sampled: &[&Leaf],
    g: &Geometry,
    max_levels: u8,
    entries: &EntryEstimate,
    cf: &CreateFailure,
) -> Headroom {
    let live: u64 = sampled.iter().map(|l| u64::from(l.live)).sum();
    let used: u64 = sampled.iter().map(|l| l.used as u64).sum();
    // Leaves hold fewer long names than short ones: scale the density seen to the judged name's size.
    let per_leaf = if live == 0 {
        0.0
    } else {
        entries.per_leaf_mean * (used as f64 / live as f64) / cf.rec_len as f64
    };
    let shape = Shape {
        blocks: t
            .nodes
            .iter()
            .map(|n| {
                let bottom = n.children.is_empty();
                let width = if bottom {
                    n.leaves.clone().map(|k| t.leaf_width(k)).sum::<u64>() as f64
                        / HASH_SPACE as f64
                } else {
                    0.0
                };
                model::Block {
                    parent: n.parent,
                    children: n.children.clone(),
                    limit: u32::from(n.limit),
                    leaves: if bottom { f64::from(n.count) } else { 0.0 },
                    width,
                }
            })
            .collect(),
        depth: t.root.indirect_levels + 1,
        max_depth: max_levels,
        node_limit: u32::from(g.node_limit()),
    };
    let projection = model::project(&shape, per_leaf, entries.relative_std_error);
    // A name that hashes into a failing range fails: with a failing share s, the first failure comes after
    // about 1/s creates, whatever the index does elsewhere.
    let by_share = (cf.failing_share > 0.0).then(|| 1.0 / cf.failing_share);
    let cap = |c: f64| by_share.map_or(c, |b| c.min(b)).round() as u64;
    let entries_left = projection.map(|p| cap(p.creates)).or(by_share.map(cap));
    Headroom {
        entries_left,
        entries_left_low: projection.map(|p| cap(p.low)),
        entries_left_high: projection.map(|p| cap(p.high)),
        entries_at_first_failure: entries_left.map(|l| entries.estimate + l),
        entries_per_leaf: per_leaf,
        leaves_at_first_failure: projection.map(|p| p.leaves.round() as u64),
        runs: projection.map_or(0, |p| p.runs),
        model: format!(
            "split projection: each bottom index block gains leaves in proportion to the hash width it covers, \
             at {per_leaf:.2} names of {} bytes per leaf (a Poisson process, {} seeded runs); a full block splits \
             in half while a block above has room; the first ENOSPC is the next leaf split under a full block \
             whose path is full at {max_levels} levels{}",
            cf.rec_len,
            projection.map_or(0, |p| p.runs),
            if by_share.is_some() {
                "; capped by 1 / failing_share, the expected creates before one hashes into a failing range"
            } else {
                ""
            }
        ),
    }
}
