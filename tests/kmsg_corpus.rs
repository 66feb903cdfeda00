//! The kernel-log corpus (tests/fixtures/kmsg/corpus): real excerpts from public issues, across kernels 3.10 to
//! 6.x, x86_64 and arm64, and every output format wonk reads. Each excerpt must give every finding its manifest
//! expects, with the device, pid, comm, inode and pod uid the log carries. Saved logs from other machines: nothing
//! is looked up on this host.

use serde_json::Value;
use std::path::{Path, PathBuf};
use wonk::checks::Context;
use wonk::host::Host;
use wonk::kmsg::{self, Options, Source};
use wonk::owner::Attributor;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmsg/corpus")
}

/// What the manifest's expectation keys read from a finding.
fn field(f: &Value, key: &str) -> Value {
    let e = &f["evidence"];
    match key {
        "kind" | "subject" => f[key].clone(),
        "device" => [&e["device"], &e["interface"], &e["location"]]
            .into_iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        "comm" => [&e["comm"], &e["task"]]
            .into_iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        "inode" => match &e["inode"] {
            Value::Null => e["inodes"][0].clone(),
            v => v.clone(),
        },
        "pod_uid" => f["owner"]["pod_uid"].clone(),
        other => e[other].clone(),
    }
}

fn matches(f: &Value, want: &serde_json::Map<String, Value>) -> bool {
    want.iter().all(|(k, v)| match k.as_str() {
        "stack_min" => e_len(&f["evidence"]["logged_stack"]) >= v.as_u64().unwrap_or(0) as usize,
        _ => field(f, k) == *v,
    })
}

fn e_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// Runs one excerpt: its findings, as JSON.
fn scan(ctx: &Context<'_>, file: &Path) -> (Vec<Value>, wonk::finding::CheckOutput) {
    let out = kmsg::scan(
        ctx.owners,
        &Source::File(file.to_path_buf()),
        &Options::default(),
    );
    let findings = out
        .findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    (findings, out)
}

#[test]
fn every_corpus_excerpt_gives_its_expected_findings() {
    let dir = corpus();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json")).unwrap()).unwrap();
    let excerpts = manifest["excerpts"].as_array().unwrap();
    assert!(excerpts.len() >= 100, "{} excerpts", excerpts.len());
    let host = Host::open(Path::new("/")).unwrap();
    let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let mut failures = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for x in excerpts {
        let name = x["file"].as_str().unwrap();
        listed.insert(name.to_string());
        assert!(
            x["source"].as_str().unwrap().starts_with("https://"),
            "{name}: no provenance"
        );
        let (findings, out) = scan(&ctx, &dir.join(name));
        if let Some(e) = &out.failed {
            failures.push(format!("{name}: failed: {e}"));
            continue;
        }
        for f in &findings {
            // A saved log from elsewhere: nothing looked up here.
            if f["evidence"]["resolved_here"] != false {
                failures.push(format!("{name}: resolved on this host: {f}"));
            }
        }
        let expect = x["expect"].as_array().unwrap();
        if expect.is_empty() {
            failures.push(format!("{name}: expects nothing"));
        }
        for want in expect {
            let want = want.as_object().unwrap();
            if !findings.iter().any(|f| matches(f, want)) {
                let got: Vec<String> = findings
                    .iter()
                    .map(|f| {
                        format!(
                            "{} {} {}",
                            f["kind"],
                            f["subject"],
                            serde_json::to_string(&f["evidence"]).unwrap()
                        )
                    })
                    .collect();
                failures.push(format!(
                    "{name}: no finding {}\n    got: {}",
                    Value::Object(want.clone()),
                    got.join("\n         ")
                ));
            }
        }
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n.ends_with(".log") {
            assert!(listed.contains(&n), "{n} is not in MANIFEST.json");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} excerpts:\n{}",
        failures.len(),
        excerpts.len(),
        failures.join("\n")
    );
}
