#!/usr/bin/env bash
# Coverage of wonk's kernel-log rules against node-problem-detector's default kernel monitor, on the corpus of real
# excerpts in tests/fixtures/kmsg/corpus (MANIFEST.json says what each one holds).
#
#   bench/kmsg_npd.sh
#
# wonk: `wonk kmsg FILE --json` per excerpt; an excerpt is recognized when every finding kind the manifest expects
# is among wonk's findings, and its owners are found when every expected pod uid is. NPD: its published patterns
# (bench/data/npd-kernel-monitor.json, quoted with their provenance) applied as NPD applies them, each one to the end
# of each line (Go regexp `pattern\z`; Python's `re` reads these patterns the same), ANSI escapes removed first;
# an excerpt is flagged when any line matches. Prints one row per excerpt where the two differ, then both
# coverages. Exits 1 when wonk recognizes less than 95% of the excerpts or misses one that NPD flags.
#
# Environment: WONK (binary to test; default: build target/release/wonk).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${WONK:-} ]]; then
    echo "building wonk (cargo build --release --features cri)..." >&2
    (cd "$repo" && cargo build --release --quiet --features cri)
    WONK=$repo/target/release/wonk
fi
[[ -x $WONK ]] || { echo "kmsg_npd.sh: $WONK is not executable" >&2; exit 2; }

exec python3 - "$WONK" "$repo/tests/fixtures/kmsg/corpus" "$repo/bench/data/npd-kernel-monitor.json" <<'PY'
import json, re, subprocess, sys

wonk, corpus, npd_file = sys.argv[1:4]
manifest = json.load(open(f"{corpus}/MANIFEST.json"))["excerpts"]
npd = json.load(open(npd_file))
rules = [(r["reason"], re.compile(r["pattern"] + r"\Z")) for r in npd["rules"]]
ansi = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|.)")

rows, wonk_ok, npd_ok, owners_want, owners_ok, npd_only = [], 0, 0, 0, 0, []
for x in manifest:
    path = f"{corpus}/{x['file']}"
    out = subprocess.run([wonk, "kmsg", path, "--json"], capture_output=True)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        report = {"findings": []}
    found = report.get("findings", [])
    kinds = {f["kind"] for f in found}
    uids = {(f.get("owner") or {}).get("pod_uid") for f in found}
    want = x["expect"]
    w = all(e["kind"] in kinds for e in want)
    want_uids = {e["pod_uid"] for e in want if "pod_uid" in e}
    if want_uids:
        owners_want += 1
        owners_ok += want_uids <= uids
    reasons = set()
    with open(path, "rb") as f:
        for raw in f:
            line = ansi.sub(b"", raw.rstrip(b"\r\n")).decode("utf-8", "replace")
            for reason, rx in rules:
                if rx.search(line):
                    reasons.add(reason)
    n = bool(reasons)
    wonk_ok += w
    npd_ok += n
    if n and not w:
        npd_only.append(x["file"])
    if w != n:
        rows.append((x["file"], ",".join(sorted({e["kind"] for e in want})), "yes" if w else "NO", ",".join(sorted(reasons)) or "-"))

total = len(manifest)
print(f"{'excerpt (where wonk and NPD differ)':<62} {'expected kinds':<34} {'wonk':<5} NPD")
for r in rows:
    print(f"{r[0]:<62} {r[1]:<34} {r[2]:<5} {r[3]}")
print()
print(f"excerpts:                         {total}")
print(f"wonk recognizes (every kind):     {wonk_ok:4d}  {100 * wonk_ok / total:5.1f}%")
print(f"NPD default kernel monitor flags: {npd_ok:4d}  {100 * npd_ok / total:5.1f}%")
print(f"owners (pod uid) where the log has one: wonk {owners_ok} of {owners_want}; NPD reports no owners")
print(f"flagged by NPD, missed by wonk:   {len(npd_only)} {' '.join(npd_only)}")
sys.exit(0 if wonk_ok * 100 >= 95 * total and not npd_only else 1)
PY
