//! The engine: records in, rules matched, bursts folded into groups, multi-line reports (OOM, hung task, oops)
//! captured up to their end.

use super::*;

/// What the records that follow a report may add to it.
#[derive(Debug)]
pub(super) struct Capture {
    pub(super) group: usize,
    pub(super) left: u16,
    /// Whether to keep the trace: only the first report of a group keeps one.
    pub(super) frames: bool,
}

/// The rules engine: feed it records, then take the folded groups.
#[derive(Debug)]
pub struct Engine {
    groups: Vec<Group>,
    /// Per rule: key -> position in `groups`.
    index: [HashMap<String, usize>; Rule::ALL.len()],
    matched: [u64; Rule::ALL.len()],
    companions: u64,
    /// Records written by user space, dropped unread.
    from_userspace: u64,
    /// Matched records whose format does not carry the facility (text logs without `<N>` or `kern  :`).
    facility_unknown: u64,
    dropped: u64,
    capture: Option<Capture>,
    /// (pid, group) of recent `oom-kill:` summaries, for their "Killed process" line.
    recent_oom: Vec<(u64, usize)>,
    /// (device, group) of the last full-index warning, for its companion line.
    last_htree: Option<(String, usize)>,
    /// The cgroup an OOM report before 4.19 named, for its "Kill process" summary (and whether a "Task in" line
    /// named it, which a "Memory cgroup stats" line does not override).
    oom_cgroup: Option<(String, bool)>,
    /// The group of a "Kill process" summary, for the "Killed process" line after it (whose pid may be a child's).
    chosen_oom: Option<usize>,
    /// Records left in which hardware errors are BERT records from the previous boot.
    bert_left: u16,
    /// The group of the last CPER record, for its section type.
    last_cper: Option<usize>,
    /// Mounts of each ext4 device seen so far, so that warnings from different filesystems on one device do not
    /// fold together.
    mounts: HashMap<String, u32>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            groups: Vec::new(),
            index: Default::default(),
            matched: [0; Rule::ALL.len()],
            companions: 0,
            from_userspace: 0,
            facility_unknown: 0,
            dropped: 0,
            capture: None,
            recent_oom: Vec::new(),
            last_htree: None,
            oom_cgroup: None,
            chosen_oom: None,
            bert_left: 0,
            last_cper: None,
            mounts: HashMap::new(),
        }
    }

    /// Looks at one record.
    pub fn push(&mut self, r: &Record<'_>) {
        if r.from_userspace() {
            // Any process that can open /dev/kmsg can write a record, and the kernel gives it facility "user"
            // (never 0): such a record is not the kernel's word on anything, and cannot be part of a report.
            self.from_userspace += 1;
            return;
        }
        let msg: &[u8] = &r.message;
        if self.capture.is_some() {
            self.follow_report(msg);
        }
        self.bert_left = self.bert_left.saturating_sub(1);
        let Some(hit) = classify(msg) else {
            return;
        };
        if r.facility.is_none() {
            self.facility_unknown += 1;
        }
        match hit {
            Hit::Event {
                rule,
                mut key,
                mut detail,
            } => {
                self.matched[rule.index()] += 1;
                if let Detail::Hardware { previous_boot, .. } = &mut detail {
                    if self.bert_left > 0 {
                        *previous_boot = true;
                        key = format!("{key} (previous boot)");
                    }
                }
                if let Detail::Htree { device, .. } = &detail {
                    if let Some(n) = self.mounts.get(device) {
                        key = format!("{key}@{n}");
                    }
                }
                let in_oops = self.capture.as_ref().is_some_and(|c| {
                    self.groups
                        .get(c.group)
                        .is_some_and(|g| g.rule == Rule::KernelOops)
                });
                if rule == Rule::KernelOops
                    && in_oops
                    && (msg
                        .strip_prefix(b"Oops: ")
                        .is_some_and(|r| r.first().is_some_and(u8::is_ascii_digit))
                        || msg.starts_with(b"Internal error: Oops"))
                {
                    // The "Oops: 0000 [#1] SMP" line of a report already counted by its "BUG: ..." (or arm64's
                    // "Unable to handle kernel ...") line.
                    return;
                }
                let device = match &detail {
                    Detail::Htree { device, .. } => Some(device.clone()),
                    _ => None,
                };
                let pid = match &detail {
                    Detail::Oom { pid, .. } => *pid,
                    _ => None,
                };
                let Some(g) = self.fold(rule, key, detail, r) else {
                    return;
                };
                match rule {
                    Rule::TaskHung | Rule::KernelOops => {
                        let frames = match &self.groups[g].detail {
                            Detail::Hung { logged_stack, .. }
                            | Detail::Oops { logged_stack, .. } => logged_stack.is_empty(),
                            _ => false,
                        };
                        self.capture = Some(Capture {
                            group: g,
                            left: CAPTURE_RECORDS,
                            frames,
                        })
                    }
                    Rule::HtreeFull => self.last_htree = device.map(|d| (d, g)),
                    Rule::HardwareError => self.last_cper = Some(g),
                    Rule::OomKill => {
                        self.oom_cgroup = None;
                        if let Some(pid) = pid {
                            if self.recent_oom.len() >= MAX_LIST {
                                self.recent_oom.remove(0);
                            }
                            self.recent_oom.push((pid, g));
                        }
                    }
                    _ => {}
                }
            }
            Hit::Ext4Mounted { device } => {
                // The full-index groups are the ones a new filesystem on the device concerns.
                for &g in self.index[Rule::HtreeFull.index()].values() {
                    if let Some(Detail::Htree {
                        device: d,
                        remounted,
                        ..
                    }) = self.groups.get_mut(g).map(|g| &mut g.detail)
                    {
                        if *d == device {
                            *remounted = true;
                        }
                    }
                }
                if self.last_htree.as_ref().is_some_and(|(d, _)| *d == device) {
                    self.last_htree = None;
                }
                let room = self.mounts.len() < MAX_GROUPS;
                match self.mounts.get_mut(device.as_ref()) {
                    Some(n) => *n += 1,
                    None if room => {
                        self.mounts.insert(device.into_owned(), 1);
                    }
                    None => {}
                }
            }
            Hit::HtreeCompanion { device } => {
                self.companions += 1;
                if let Some((d, g)) = &self.last_htree {
                    if *d == device {
                        if let Some(Detail::Htree { large_dir, .. }) =
                            self.groups.get_mut(*g).map(|g| &mut g.detail)
                        {
                            *large_dir = Some(false);
                        }
                    }
                }
            }
            Hit::OomVictim(detail) => {
                self.matched[Rule::OomKill.index()] += 1;
                let Detail::Oom { pid, task, .. } = &detail else {
                    return;
                };
                let pid = *pid;
                let summary = self
                    .recent_oom
                    .iter()
                    .position(|(p, _)| Some(*p) == pid)
                    .map(|i| self.recent_oom.remove(i).1)
                    .or_else(|| self.chosen_oom.take());
                match summary.and_then(|g| self.groups.get_mut(g)) {
                    Some(g) => {
                        let victim = pid;
                        if let (
                            Detail::Oom {
                                total_vm_kb,
                                anon_rss_kb,
                                file_rss_kb,
                                shmem_rss_kb,
                                oom_score_adj,
                                uid,
                                pid: g_pid,
                                pids: g_pids,
                                ..
                            },
                            Detail::Oom {
                                total_vm_kb: tv,
                                anon_rss_kb: ar,
                                file_rss_kb: fr,
                                shmem_rss_kb: sr,
                                oom_score_adj: adj,
                                uid: u,
                                ..
                            },
                        ) = (&mut g.detail, detail)
                        {
                            if let (Some(new), Some(old)) = (victim, g_pid.as_mut()) {
                                // "Kill process N ... or sacrifice child": the kernel may kill a child of N.
                                if *old != new {
                                    *old = new;
                                    if let Some(last) = g_pids.last_mut() {
                                        *last = new;
                                    }
                                }
                            }
                            *total_vm_kb = tv;
                            *anon_rss_kb = ar;
                            *file_rss_kb = fr;
                            *shmem_rss_kb = sr;
                            *oom_score_adj = adj;
                            *uid = uid.or(u);
                        }
                    }
                    None => {
                        let key = format!("task:{task}");
                        self.fold(Rule::OomKill, key, detail, r);
                    }
                }
            }
            Hit::OomChosen(mut detail) => {
                self.matched[Rule::OomKill.index()] += 1;
                let (memcg, task) = match &mut detail {
                    Detail::Oom { memcg, task, .. } => {
                        *memcg = self.oom_cgroup.take().map(|(m, _)| m);
                        (memcg.clone(), task.clone())
                    }
                    _ => return,
                };
                let key = memcg.unwrap_or_else(|| format!("task:{task}"));
                self.chosen_oom = self.fold(Rule::OomKill, key, detail, r);
            }
            Hit::OomCgroup { memcg, task } => {
                // "Task in" names the killed task's cgroup; otherwise the first stats line (the limit's cgroup).
                if task || self.oom_cgroup.is_none() {
                    self.oom_cgroup = Some((memcg, task));
                }
            }
            Hit::OomStats => {
                if self.oom_cgroup.is_none() {
                    self.oom_cgroup = stats_memcg(msg).map(|m| (m, false));
                }
            }
            Hit::Bert => self.bert_left = CAPTURE_RECORDS,
            Hit::CperSection(section) => {
                if let Some(Detail::Hardware { section: s, .. }) = self
                    .last_cper
                    .and_then(|g| self.groups.get_mut(g))
                    .map(|g| &mut g.detail)
                {
                    if s.is_none() {
                        *s = Some(section);
                    }
                }
            }
        }
    }

    /// Adds an event to its group, or starts one. `None` when the group table is full.
    pub(super) fn fold(
        &mut self,
        rule: Rule,
        key: String,
        detail: Detail,
        r: &Record<'_>,
    ) -> Option<usize> {
        let now = Instant::now();
        if let Some(&i) = self.index[rule.index()].get(key.as_str()) {
            let g = &mut self.groups[i];
            g.count += 1;
            if let (Some(prev), Some(ts)) = (g.last.ts_usec, r.ts_usec) {
                if ts.saturating_sub(prev) > BURST_GAP_USEC {
                    g.bursts += 1;
                }
            }
            g.last = Stamp::of(r);
            g.touched = now;
            g.detail.merge(detail);
            return Some(i);
        }
        if self.groups.len() >= MAX_GROUPS {
            self.dropped += 1;
            return None;
        }
        let stamp = Stamp::of(r);
        let mut message = r.text().into_owned();
        truncate(&mut message, MAX_MESSAGE);
        self.groups.push(Group {
            rule,
            key: key.clone(),
            count: 1,
            bursts: 1,
            first: stamp.clone(),
            last: stamp,
            message,
            detail,
            touched: now,
        });
        let i = self.groups.len() - 1;
        self.index[rule.index()].insert(key, i);
        Some(i)
    }

    /// Takes what the lines after a hung-task or oops report add: the call trace, the oopsing task, RIP.
    pub(super) fn follow_report(&mut self, msg: &[u8]) {
        let Some(cap) = &mut self.capture else {
            return;
        };
        cap.left = cap.left.saturating_sub(1);
        let t = trim_start(msg);
        let end = cap.left == 0
            || t.starts_with(b"</TASK>")
            || t.starts_with(b"---[ end trace")
            || !report_line(msg);
        let (gi, frames) = (cap.group, cap.frames);
        if end {
            self.capture = None;
        }
        let mut rekey = None;
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let frame = || {
            let mut s = display_bytes(t);
            truncate(&mut s, 160);
            s
        };
        match &mut g.detail {
            Detail::Hung { logged_stack, .. }
                if frames && is_frame(t) && logged_stack.len() < MAX_STACK =>
            {
                logged_stack.push(frame());
            }
            Detail::Oops {
                pid,
                comm,
                rip,
                logged_stack,
            } => {
                if t.starts_with(b"CPU: ") && pid.is_none() {
                    // "CPU: 1 UID: 0 PID: 123 Comm: foo Not tainted 6.18 #1" (older kernels have no UID); "Kdump:
                    // loaded" comes between the comm and the taint when a crash kernel is loaded.
                    *pid = after(t, b" PID: ").and_then(|r| digits(r).map(|(n, _)| n));
                    *comm = after(t, b" Comm: ").map(|r| {
                        let end = find(r, b" Kdump: loaded")
                            .or_else(|| find(r, b" Not tainted"))
                            .or_else(|| find(r, b" Tainted"))
                            .unwrap_or(r.len());
                        display_bytes(&r[..end])
                    });
                    rekey.clone_from(comm);
                } else if t.starts_with(b"RIP: ") && rip.is_none() {
                    *rip = Some(display_bytes(&t[5..]));
                } else if frames && is_frame(t) && logged_stack.len() < MAX_STACK {
                    logged_stack.push(frame());
                }
            }
            _ => {}
        }
        if let Some(c) = rekey {
            self.rekey_oops(gi, &c);
        }
    }

    /// Oopses fold by what went wrong and in which task: a new report's group, keyed by the fault alone until its
    /// `CPU: ... Comm:` line, is renamed, or merged into the group that already has that fault and task.
    pub(super) fn rekey_oops(&mut self, g: usize, comm: &str) {
        if g + 1 != self.groups.len() || self.groups[g].count != 1 {
            return;
        }
        let idx = Rule::KernelOops.index();
        let old = self.groups[g].key.clone();
        let new = format!("{old} in {comm}");
        match self.index[idx].get(&new).copied() {
            Some(into) => {
                let Some(gone) = self.groups.pop() else {
                    return;
                };
                self.index[idx].remove(&old);
                let into = &mut self.groups[into];
                into.count += 1;
                into.last = gone.last;
                into.touched = gone.touched;
                if let Some(c) = &mut self.capture {
                    c.group = self.index[idx][&new];
                    c.frames = false;
                }
            }
            None => {
                self.index[idx].remove(&old);
                self.index[idx].insert(new.clone(), g);
                self.groups[g].key = new;
            }
        }
    }

    /// Groups that have been quiet for `quiet`: taken out, for a follower to report.
    pub fn take_settled(&mut self, quiet: Duration) -> Vec<Group> {
        let now = Instant::now();
        if !self
            .groups
            .iter()
            .any(|g| now.duration_since(g.touched) >= quiet)
        {
            return Vec::new();
        }
        let (done, keep): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| now.duration_since(g.touched) >= quiet);
        self.groups = keep;
        self.reindex();
        fold_history(done)
    }

    /// Every group, taken out.
    pub fn take_all(&mut self) -> Vec<Group> {
        let all = std::mem::take(&mut self.groups);
        self.reindex();
        fold_history(all)
    }

    /// The groups so far.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub(super) fn reindex(&mut self) {
        for m in &mut self.index {
            m.clear();
        }
        for (i, g) in self.groups.iter().enumerate() {
            self.index[g.rule.index()].insert(g.key.clone(), i);
        }
        self.capture = None;
        self.recent_oom.clear();
        self.last_htree = None;
        self.chosen_oom = None;
        self.last_cper = None;
    }

    /// Records written by user space (dropped) and matched records of unknown facility.
    pub fn provenance(&self) -> (u64, u64) {
        (self.from_userspace, self.facility_unknown)
    }

    /// Counters: messages matched per rule, companion lines, user-space records, groups dropped.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Rule::ALL
            .iter()
            .map(|r| (r.stat().to_string(), self.matched[r.index()]))
            .collect();
        v.push(("matched_htree_companion".into(), self.companions));
        v.push(("dropped_from_userspace".into(), self.from_userspace));
        v.push(("matched_facility_unknown".into(), self.facility_unknown));
        v.push(("groups_dropped".into(), self.dropped));
        v
    }

    /// Messages matched by all rules (companions and merged lines included).
    pub fn matched(&self) -> u64 {
        self.matched.iter().sum::<u64>() + self.companions
    }
}

pub(super) fn truncate(s: &mut String, max: usize) {
    let end = crate::term::cut_bytes(s, max).len();
    s.truncate(end);
}

/// A line that can belong to a hung-task or oops report: indented, or a `Header:` line.
pub(super) fn report_line(msg: &[u8]) -> bool {
    match msg.first() {
        None => true,
        Some(b' ' | b'\t' | b'<' | b'#' | b'"' | b'[') => true,
        Some(_) => {
            const HEADERS: [&[u8]; 14] = [
                b"Call Trace:",
                b"Call trace:",
                b"Hardware name:",
                b"Modules linked in:",
                b"PGD ",
                b"Mem abort info:",
                b"Data abort info:",
                b"user pgtable:",
                b"swapper pgtable:",
                b"Internal error:",
                b"pc : ",
                b"lr : ",
                b"sp : ",
                b"Tainted:",
            ];
            if HEADERS.iter().any(|h| msg.starts_with(h))
                || task_state_line(msg)
                || stack_words(msg)
            {
                return true;
            }
            // "task:sleep state:D ...", "CPU: 1 PID: ...", "RIP: 0010:...", "Oops: 0000 [#1]", "x29: ..."
            match memchr::memchr(b':', &msg[..msg.len().min(17)]) {
                Some(c) => !msg[..c].contains(&b' '),
                None => false,
            }
        }
    }
}

/// A hung task's state line before 5.10: the comm padded to 15 columns, then its state (`logrotate       D    0
/// 17344  17342 0x00000080`); the call trace follows it.
pub(super) fn task_state_line(msg: &[u8]) -> bool {
    msg.len() > 18
        && msg[15] == b' '
        && matches!(
            msg[16],
            b'D' | b'R' | b'S' | b'T' | b't' | b'Z' | b'X' | b'I'
        )
        && msg[17] == b' '
}

/// The raw stack words older kernels print after a hung task's state line, when syslog has eaten their indent
/// (`ffff882fd0627c70 0000000000000086 ...`).
pub(super) fn stack_words(msg: &[u8]) -> bool {
    [16, 8]
        .iter()
        .any(|&w| msg.len() > w && msg[w] == b' ' && msg[..w].iter().all(u8::is_ascii_hexdigit))
}

/// A call-trace frame: `__schedule+0x3a0/0xb40` or `? foo+0x1/0x2 [ext4]`.
pub(super) fn is_frame(t: &[u8]) -> bool {
    find(t, b"+0x").is_some() && !t.starts_with(b"RIP:") && !t.starts_with(b"Code:")
}

/// Folds the full-index groups of each directory from filesystems mounted before (`remounted`) into one: the
/// counts and bursts add up, the first and last times span them all, `earlier_mounts` says how many there were.
fn fold_history(groups: Vec<Group>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::with_capacity(groups.len());
    let mut history: HashMap<String, usize> = HashMap::new();
    for mut g in groups {
        let base = match &g.detail {
            Detail::Htree {
                remounted: true, ..
            } => g.key.split('@').next().unwrap_or(&g.key).to_string(),
            _ => {
                out.push(g);
                continue;
            }
        };
        match history.get(&base) {
            Some(&i) => {
                let h = &mut out[i];
                h.count += g.count;
                h.bursts += g.bursts;
                if g.first.seq < h.first.seq {
                    h.first = g.first;
                }
                if g.last.seq > h.last.seq {
                    h.last = g.last;
                }
                if let Detail::Htree { earlier_mounts, .. } = &mut h.detail {
                    *earlier_mounts += 1;
                }
            }
            None => {
                if let Detail::Htree { earlier_mounts, .. } = &mut g.detail {
                    *earlier_mounts = 1;
                }
                g.key = base.clone();
                history.insert(base, out.len());
                out.push(g);
            }
        }
    }
    out
}
