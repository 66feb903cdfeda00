//! The headroom model: how many more creates a directory takes before its first "index full" ENOSPC.
//!
//! A fluid model of the kernel's splits (linux fs/ext4/namei.c, ext4_dx_add_entry). New names hash uniformly,
//! so each bottom index block gains leaves in proportion to the hash-space width it covers, at one leaf per
//! `entries_per_leaf` names. A bottom block that reaches its limit splits in half (by count, and so about by
//! width) if some index block above it has room; the full blocks between split too, top first. With the root
//! full and no level to add, the block is stuck, and the next leaf split under it (about `entries_per_leaf /
//! width` creates later) is the first ENOSPC. Without large_dir a 1-level index first grows to 2 levels.
//!
//! The first ENOSPC is the first of many blocks to fill, so chance matters: the block that fills first is one
//! that happened to get more leaf splits than its width predicts. [`project`] therefore also runs the same
//! model with leaf splits as a Poisson process per block (a block needs a Gamma-distributed number of creates to
//! fill), with fixed seeds, and reports the median and the 10th and 90th percentiles of those runs.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An index block as the model sees it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub parent: Option<usize>,
    /// Index blocks below, in hash order; empty for a bottom block.
    pub children: Vec<usize>,
    pub limit: u32,
    /// Bottom blocks: leaves now, and the share of the hash space covered (0..=1).
    pub leaves: f64,
    pub width: f64,
}

/// The index now: `blocks[0]` is the root; bottom blocks are those without children.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub blocks: Vec<Block>,
    /// Index levels now (indirect_levels + 1), and the most the filesystem allows.
    pub depth: u8,
    pub max_depth: u8,
    pub node_limit: u32,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Projection {
    /// Creates until the first ENOSPC: the median of the random runs, or the deterministic run without them.
    pub creates: f64,
    /// The 10th and 90th percentile of the random runs (both `creates` without them).
    pub low: f64,
    pub high: f64,
    /// The deterministic run alone.
    pub fluid: f64,
    /// Leaves at that point (deterministic run).
    pub leaves: f64,
    /// Random runs made (0 when the index is too large to repeat the run).
    pub runs: usize,
}

/// More steps than any real directory needs (a full 3-level index has about 260,000 bottom blocks).
const MAX_EVENTS: usize = 4_000_000;
/// Random runs, and the most steps a deterministic run may take for them to be made.
const RUNS: usize = 31;
const RUNS_MAX_EVENTS: usize = 50_000;
const PARALLEL_MIN_EVENTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    t: f64,
    block: usize,
    version: u32,
}

impl Eq for Event {}

impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        self.t
            .total_cmp(&o.t)
            .then(self.block.cmp(&o.block))
            .then(self.version.cmp(&o.version))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A block in the simulation. Children are a linked list in hash order (`first`, then each one's `next`), so
/// that a split inserts its new half after itself in O(1) instead of searching and shifting the parent's list.
#[derive(Debug, Clone)]
struct Node {
    parent: Option<usize>,
    first: usize,
    next: usize,
    /// Children now; 0 for a bottom block.
    n: usize,
    limit: u32,
    leaves: f64,
    width: f64,
}

const NONE: usize = usize::MAX;

impl Node {
    fn bottom(&self) -> bool {
        self.n == 0
    }
}

struct Sim {
    b: Vec<Node>,
    /// When each bottom block's `leaves` was last brought up to date.
    t0: Vec<f64>,
    version: Vec<u32>,
    heap: BinaryHeap<Reverse<Event>>,
    per_leaf: f64,
    depth: u8,
    max_depth: u8,
    node_limit: u32,
    /// Random leaf splits with this generator; the fluid model without.
    rng: Option<Rng>,
}

/// xorshift64*: small, fast and seeded, so that reports are reproducible.
struct Rng {
    state: u64,
    /// The second normal of the last Box-Muller pair.
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng {
            state: seed | 1,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * v).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }

    /// Gamma(k, 1) for k >= 1 (Marsaglia and Tsang, with their squeeze, which spares the logarithm in most
    /// draws).
    fn gamma(&mut self, k: f64) -> f64 {
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

impl Sim {
    /// Expected leaves of bottom block `i` at `t`.
    fn leaves_at(&self, i: usize, t: f64) -> f64 {
        (self.b[i].leaves + (t - self.t0[i]) * self.b[i].width / self.per_leaf)
            .min(f64::from(self.b[i].limit))
    }

    /// Creates until `splits` more leaf splits in a block of `width`: their mean, or a random draw.
    fn creates_for(&mut self, splits: f64, width: f64) -> f64 {
        let scale = self.per_leaf / width;
        match &mut self.rng {
            None => splits * scale,
            Some(_) if splits <= 0.0 => 0.0,
            Some(r) => r.gamma(splits) * scale,
        }
    }

    fn schedule(&mut self, i: usize) {
        self.version[i] += 1;
        let (limit, leaves, width) = (self.b[i].limit, self.b[i].leaves, self.b[i].width);
        if width <= 0.0 {
            return;
        }
        let room = (f64::from(limit) - leaves).max(0.0).round();
        let t = self.t0[i] + self.creates_for(room, width);
        self.heap.push(Reverse(Event {
            t,
            block: i,
            version: self.version[i],
        }));
    }

    fn count(&self, i: usize) -> f64 {
        if self.b[i].bottom() {
            self.b[i].leaves
        } else {
            self.b[i].n as f64
        }
    }

    fn full(&self, i: usize) -> bool {
        self.count(i) >= f64::from(self.b[i].limit) - 1e-9
    }

    fn push(&mut self, node: Node, t: f64) -> usize {
        self.b.push(node);
        self.t0.push(t);
        self.version.push(0);
        self.b.len() - 1
    }

    /// Makes `first` and the siblings after it children of `parent`.
    fn adopt(&mut self, parent: usize, first: usize) {
        let mut c = first;
        while c != NONE {
            self.b[c].parent = Some(parent);
            c = self.b[c].next;
        }
    }

    /// Splits a full block in two; the new half goes right after it in its parent.
    fn split(&mut self, x: usize, t: f64) {
        let parent = self.b[x].parent;
        let limit = self.b[x].limit;
        let y = if self.b[x].bottom() {
            let leaves = self.b[x].leaves;
            let w = self.b[x].width / 2.0;
            self.b[x].leaves = (leaves / 2.0).floor();
            self.b[x].width = w;
            self.t0[x] = t;
            let y = self.push(
                Node {
                    parent,
                    first: NONE,
                    next: NONE,
                    n: 0,
                    limit,
                    leaves: leaves - (leaves / 2.0).floor(),
                    width: w,
                },
                t,
            );
            self.schedule(x);
            self.schedule(y);
            y
        } else {
            // The upper half of the children moves to the new block.
            let n = self.b[x].n;
            let k = (n / 2).max(1);
            let mut last = self.b[x].first;
            for _ in 1..k {
                last = self.b[last].next;
            }
            let moved = std::mem::replace(&mut self.b[last].next, NONE);
            self.b[x].n = k;
            let y = self.push(
                Node {
                    parent,
                    first: moved,
                    next: NONE,
                    n: n - k,
                    limit,
                    leaves: 0.0,
                    width: 0.0,
                },
                t,
            );
            self.adopt(y, moved);
            y
        };
        if let Some(p) = parent {
            self.b[y].next = std::mem::replace(&mut self.b[x].next, y);
            self.b[p].n += 1;
        }
    }

    /// Moves the root's entries into a new block below it (the root keeps one entry). Returns the new block.
    fn add_level(&mut self, t: f64) -> usize {
        let root = 0;
        let (first, n_children) = (self.b[root].first, self.b[root].n);
        let n = self.push(
            Node {
                parent: Some(root),
                first,
                next: NONE,
                n: n_children,
                limit: self.node_limit,
                leaves: self.b[root].leaves,
                width: self.b[root].width,
            },
            t,
        );
        self.adopt(n, first);
        self.b[root].first = n;
        self.b[root].n = 1;
        self.version[root] += 1;
        self.depth += 1;
        if n_children == 0 {
            self.schedule(n);
        }
        n
    }

    /// A bottom block reached its limit at `t`. Returns the time of the first ENOSPC under it, if it is stuck.
    fn on_full(&mut self, mut x: usize, t: f64) -> Option<f64> {
        self.b[x].leaves = f64::from(self.b[x].limit);
        self.t0[x] = t;
        loop {
            if !self.full(x) {
                self.schedule(x);
                return None;
            }
            let mut chain = vec![x];
            let mut up = self.b[x].parent;
            while let Some(p) = up {
                if !self.full(p) {
                    break;
                }
                chain.push(p);
                up = self.b[p].parent;
            }
            if up.is_some() {
                for &c in chain.iter().rev() {
                    self.split(c, t);
                }
                return None;
            }
            if self.depth < self.max_depth {
                let n = self.add_level(t);
                if x == 0 {
                    x = n;
                }
                continue;
            }
            let scale = self.per_leaf / self.b[x].width;
            let wait = match &mut self.rng {
                Some(r) => -r.uniform().ln() * scale,
                None => scale,
            };
            return Some(t + wait);
        }
    }
}

/// Projects the creates left before the first ENOSPC; `None` when the model cannot say (no entries, or a
/// projection beyond [`MAX_EVENTS`] steps).
///
/// `per_leaf_rse` is the relative standard error of `entries_per_leaf` (it comes from a sample); each random
/// run draws its own density from it, so the percentiles carry that uncertainty too.
pub(crate) fn project(
    shape: &Shape,
    entries_per_leaf: f64,
    per_leaf_rse: f64,
) -> Option<Projection> {
    if !entries_per_leaf.is_finite() || entries_per_leaf <= 0.0 || shape.blocks.is_empty() {
        return None;
    }
    let (fluid, leaves, events) = run(shape, entries_per_leaf, None)?;
    let mut p = Projection {
        creates: fluid,
        low: fluid,
        high: fluid,
        fluid,
        leaves,
        runs: 0,
    };
    if events > RUNS_MAX_EVENTS {
        return Some(p);
    }
    // The runs are independent; a thread per core pays off once a run takes more than a few hundred steps.
    let threads = if events < PARALLEL_MIN_EVENTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(RUNS))
    };
    let mut ends = random_runs(shape, entries_per_leaf, per_leaf_rse, threads);
    if ends.len() == RUNS {
        ends.sort_by(f64::total_cmp);
        p.creates = ends[RUNS / 2];
        p.low = ends[RUNS / 10];
        p.high = ends[RUNS - 1 - RUNS / 10];
        p.runs = RUNS;
    }
    Some(p)
}

/// The creates to the first ENOSPC of each of the [`RUNS`] seeded random runs that end, on `threads` threads.
/// Run `i` has seed `i` whatever thread makes it, so the answer does not depend on the number of threads.
fn random_runs(
    shape: &Shape,
    entries_per_leaf: f64,
    per_leaf_rse: f64,
    threads: usize,
) -> Vec<f64> {
    let one = |i: u64| {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1));
        let rse = if per_leaf_rse.is_finite() {
            per_leaf_rse.clamp(0.0, 0.3)
        } else {
            0.0
        };
        let d = entries_per_leaf * (1.0 + rse * rng.normal()).max(0.1);
        run(shape, d, Some(rng)).map(|r| r.0)
    };
    if threads <= 1 {
        return (0..RUNS as u64).filter_map(one).collect();
    }
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                sc.spawn(move || {
                    (t..RUNS as u64)
                        .step_by(threads)
                        .filter_map(one)
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// One run of the model: creates to the first ENOSPC, leaves then, and the steps it took.
fn run(shape: &Shape, entries_per_leaf: f64, rng: Option<Rng>) -> Option<(f64, f64, usize)> {
    let n = shape.blocks.len();
    let mut nodes: Vec<Node> = shape
        .blocks
        .iter()
        .map(|b| Node {
            parent: b.parent,
            first: b.children.first().copied().unwrap_or(NONE),
            next: NONE,
            n: b.children.len(),
            limit: b.limit,
            leaves: b.leaves,
            width: b.width,
        })
        .collect();
    for b in &shape.blocks {
        for w in b.children.windows(2) {
            nodes[w[0]].next = w[1];
        }
    }
    let mut sim = Sim {
        b: nodes,
        t0: vec![0.0; n],
        version: vec![0; n],
        heap: BinaryHeap::new(),
        per_leaf: entries_per_leaf,
        depth: shape.depth,
        max_depth: shape.max_depth,
        node_limit: shape.node_limit,
        rng,
    };
    for i in 0..n {
        if sim.b[i].bottom() {
            sim.schedule(i);
        }
    }
    let mut first: Option<f64> = None;
    let mut events = 0;
    while let Some(Reverse(ev)) = sim.heap.pop() {
        if first.is_some_and(|f| ev.t >= f) {
            break;
        }
        if ev.version != sim.version[ev.block] || !sim.b[ev.block].bottom() {
            continue;
        }
        events += 1;
        if events > MAX_EVENTS {
            return None;
        }
        if let Some(f) = sim.on_full(ev.block, ev.t) {
            first = Some(first.map_or(f, |g: f64| g.min(f)));
        }
    }
    let t = first?;
    let leaves = (0..sim.b.len())
        .filter(|&i| sim.b[i].bottom())
        .map(|i| sim.leaves_at(i, t))
        .sum();
    Some((t, leaves, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_level(counts: &[u32], root_limit: u32, node_limit: u32) -> Shape {
        let mut blocks = vec![Block {
            parent: None,
            children: (1..=counts.len()).collect(),
            limit: root_limit,
            leaves: 0.0,
            width: 1.0,
        }];
        let w = 1.0 / counts.len() as f64;
        for &c in counts {
            blocks.push(Block {
                parent: Some(0),
                children: Vec::new(),
                limit: node_limit,
                leaves: f64::from(c),
                width: w,
            });
        }
        Shape {
            blocks,
            depth: 2,
            max_depth: 2,
            node_limit,
        }
    }

    #[test]
    fn random_runs_do_not_depend_on_the_number_of_threads() {
        // 16 nodes of 100 leaves under a root of 400: hundreds of splits a run, past PARALLEL_MIN_EVENTS.
        let s = two_level(&[100; 16], 400, 200);
        let (_, _, events) = run(&s, 30.0, None).unwrap();
        assert!(events >= PARALLEL_MIN_EVENTS, "{events} steps");
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let one = sorted(random_runs(&s, 30.0, 0.02, 1));
        assert_eq!(one.len(), RUNS);
        for threads in [2, 3, 8] {
            assert_eq!(
                sorted(random_runs(&s, 30.0, 0.02, threads)),
                one,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn a_full_root_and_one_full_node_fail_after_one_more_leaf_split() {
        let mut counts = vec![10; 4];
        counts[2] = 8;
        let s = two_level(&counts, 4, 8);
        let p = project(&s, 3.0, 0.0).unwrap();
        assert!(p.runs > 0 && p.low <= p.creates && p.creates <= p.high);
        let p = Projection {
            creates: p.fluid,
            ..p
        };
        // The full node covers a quarter of the space: its next leaf split comes after 3 / 0.25 = 12 creates.
        assert!((p.creates - 12.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn uniform_nodes_split_in_waves_until_the_root_is_full() {
        // 2 nodes of 4 leaves, node limit 8, root limit 5: nodes split once (root 4), then one more node
        // splits (root 5), and the next full node is stuck.
        let s = two_level(&[4, 4], 5, 8);
        let p = project(&s, 1.0, 0.0).unwrap();
        let p = Projection {
            creates: p.fluid,
            ..p
        };
        // Each node gains 4 leaves in 8 creates (width 1/2); then 4 nodes of 4 leaves, width 1/4, fill in
        // 16 more; the first splits (root 5), the second is stuck and fails 1 / 0.25 = 4 creates later.
        assert!((p.creates - (8.0 + 16.0 + 4.0)).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn a_one_level_index_grows_a_level_first() {
        let s = Shape {
            blocks: vec![Block {
                parent: None,
                children: Vec::new(),
                limit: 4,
                leaves: 2.0,
                width: 1.0,
            }],
            depth: 1,
            max_depth: 2,
            node_limit: 6,
        };
        let p = project(&s, 1.0, 0.0).unwrap();
        let p = Projection {
            creates: p.fluid,
            ..p
        };
        // 2 creates to fill the root (4 leaves), the level is added (node of 4/6); 2 more fill the node, which
        // splits into 2 nodes of 3 (root 2 of 4); they reach 6 after 6 more creates, split (root 4), into 4
        // nodes of 3 with width 1/4, which fill after 12 more; the first is stuck and fails 4 later.
        assert!(
            (p.creates - (2.0 + 2.0 + 6.0 + 12.0 + 4.0)).abs() < 1e-6,
            "{p:?}"
        );
        assert!(p.leaves > 20.0);
    }

    #[test]
    fn no_entries_no_projection() {
        let s = two_level(&[1, 1], 4, 8);
        assert_eq!(project(&s, 0.0, 0.0), None);
        assert_eq!(project(&s, f64::NAN, 0.0), None);
    }
}
