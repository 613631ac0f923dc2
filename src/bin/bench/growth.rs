//! The `growth` scenario: how ingest's cost moves as the log grows. Clients post messages
//! (no endpoints) until `--messages` are accepted; once a second the harness samples how
//! many are accepted, Sluice's resident and anonymous (heap) memory and the size of its
//! data file. It then reports, for each million, the rate at which that million was
//! accepted and the memory and file size when it was done, and the last million's rate as
//! a share of the first's.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{RUNS, Sluice, Subject, chart, create_app, post_while, resident_mib_of};

/// The longest a growth run may take, whatever `--messages` asks.
const GROWTH_TIME_MAX: Duration = Duration::from_secs(3_600);
/// How often the run is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Messages per reported step.
const STEP_MESSAGES: usize = 1_000_000;

/// One sample: seconds into the run, messages accepted, resident and anonymous MiB, data
/// file MiB.
#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    accepted: usize,
    rss_mib: f64,
    anon_mib: f64,
    file_mib: f64,
}

/// Runs the scenario; prints one line per million and a summary; writes JSON and SVG into
/// `out` if given. Returns false if the run could not finish its messages in time.
pub(super) async fn growth(
    subject: &Subject,
    messages: usize,
    payload: usize,
    clients: usize,
    out: Option<&Path>,
) -> bool {
    let run_number = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    let app = format!("bench-{}-{run_number}", std::process::id());
    // A map large enough for ten million messages of a few KiB.
    let config = "[storage]\nmap_size_bytes = 68719476736\n";
    let mut child = match subject.target {
        Some(addr) => Sluice::running(addr, subject.pid),
        None => Sluice::spawn(&subject.binary, &dir, config, true),
    };
    let addr = child.addr;
    drop(create_app(addr, &app).await);
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + GROWTH_TIME_MAX;
    let data_file = dir.join("data").join("data.mdb");
    let sampler = {
        let (accepted, pid) = (Arc::clone(&accepted), child.pid);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            while Instant::now() < deadline {
                tick.tick().await;
                let [rss_mib, anon_mib, _] = pid.map_or([f64::NAN; 3], resident_mib_of);
                let file_mib = std::fs::metadata(&data_file)
                    .map_or(f64::NAN, |m| m.len() as f64 / (1024.0 * 1024.0));
                let now = accepted.load(Ordering::Relaxed);
                samples.push(Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    accepted: now,
                    rss_mib,
                    anon_mib,
                    file_mib,
                });
                if now >= messages {
                    break;
                }
            }
            samples
        })
    };
    let path = format!("/api/v1/app/{app}/msg?with_content=false");
    let go = {
        let accepted = Arc::clone(&accepted);
        Arc::new(move || accepted.load(Ordering::Relaxed) < messages && Instant::now() < deadline)
    };
    post_while(addr, clients, &path, "bench.growth", payload, &accepted, go).await;
    let samples = sampler.await.unwrap_or_default();
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let done = accepted.load(Ordering::Relaxed) >= messages;
    report(&samples, messages, payload, out);
    done
}

/// When the run crossed `count` accepted messages, interpolated between samples, and the
/// sample at or after it.
fn crossing(samples: &[Sample], count: usize) -> Option<(f64, Sample)> {
    let after = samples.iter().position(|s| s.accepted >= count)?;
    let sample = samples[after];
    let (t0, n0) = after
        .checked_sub(1)
        .map_or((0.0, 0), |i| (samples[i].at_s, samples[i].accepted));
    let span = (sample.accepted - n0).max(1) as f64;
    Some((t0 + (sample.at_s - t0) * (count - n0) as f64 / span, sample))
}

/// Accepted per second for each step, with the sample that closes it.
fn steps(samples: &[Sample], messages: usize) -> Vec<(usize, f64, Sample)> {
    let step = STEP_MESSAGES.min(messages.max(1));
    let mut out = Vec::new();
    let mut previous_s = 0.0;
    for end in (step..=messages).step_by(step) {
        let Some((at_s, sample)) = crossing(samples, end) else {
            break;
        };
        out.push((end, step as f64 / (at_s - previous_s).max(1e-9), sample));
        previous_s = at_s;
    }
    out
}

fn report(samples: &[Sample], messages: usize, payload: usize, out: Option<&Path>) {
    let steps = steps(samples, messages);
    for (end, rate, s) in &steps {
        println!(
            "growth to {end:>10}  accepted {rate:>8.0}/s  rss {:.0}MiB heap {:.0}MiB file {:.0}MiB",
            s.rss_mib, s.anon_mib, s.file_mib
        );
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        println!(
            "growth {messages} x {payload} B: the last step at {:.2} of the first's rate; heap {:.0} -> {:.0} MiB",
            last.1 / first.1,
            first.2.anon_mib,
            last.2.anon_mib
        );
    } else {
        println!("growth REFUSED: the run did not complete one step");
    }
    if let Some(dir) = out {
        write(dir, samples, &steps, messages, payload);
    }
}

/// Writes the run as `growth.json` and `growth.svg` into `dir`.
fn write(
    dir: &Path,
    samples: &[Sample],
    steps: &[(usize, f64, Sample)],
    messages: usize,
    payload: usize,
) {
    let series = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.at_s, f(s))).collect()
    };
    let rate: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            let rate = (w[1].accepted - w[0].accepted) as f64 / (w[1].at_s - w[0].at_s).max(1e-9);
            (w[1].at_s, rate)
        })
        .collect();
    let (rss, anon, file) = (
        series(|s| s.rss_mib),
        series(|s| s.anon_mib),
        series(|s| s.file_mib),
    );
    let panels = [
        chart::Panel {
            title: "ingest as the log grows",
            unit: "messages per second",
            lines: vec![chart::Line {
                name: "accepted",
                points: &rate,
            }],
        },
        chart::Panel {
            title: "Sluice's memory and data file",
            unit: "MiB",
            lines: vec![
                chart::Line {
                    name: "resident",
                    points: &rss,
                },
                chart::Line {
                    name: "anonymous (heap)",
                    points: &anon,
                },
                chart::Line {
                    name: "data.mdb",
                    points: &file,
                },
            ],
        },
    ];
    let json = serde_json::json!({
        "name": "growth",
        "messages": messages,
        "payload_bytes": payload,
        "steps": steps.iter().map(|(end, rate, s)| serde_json::json!({
            "accepted": end, "accepted_per_s": rate, "rss_mib": s.rss_mib,
            "heap_mib": s.anon_mib, "file_mib": s.file_mib,
        })).collect::<Vec<_>>(),
        "series": {"accepted_per_s": rate, "rss_mib": rss, "heap_mib": anon, "file_mib": file},
    });
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::write(
                dir.join("growth.json"),
                serde_json::to_vec_pretty(&json).unwrap_or_default(),
            )
        })
        .and_then(|()| std::fs::write(dir.join("growth.svg"), chart::svg("growth", &panels)));
    if let Err(error) = written {
        eprintln!("--out {}: {error}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, accepted: usize) -> Sample {
        Sample {
            at_s,
            accepted,
            rss_mib: 1.0,
            anon_mib: 1.0,
            file_mib: 1.0,
        }
    }

    #[test]
    fn each_step_is_timed_between_interpolated_crossings() {
        // 1M in the first 10 s, the second million in 20 s more.
        let samples = [
            sample(5.0, 500_000),
            sample(10.0, 1_000_000),
            sample(20.0, 1_500_000),
            sample(30.0, 2_000_000),
        ];
        let timed = steps(&samples, 2_000_000);
        assert_eq!(timed.len(), 2);
        assert!((timed[0].1 - 100_000.0).abs() < 1.0, "{}", timed[0].1);
        assert!((timed[1].1 - 50_000.0).abs() < 1.0, "{}", timed[1].1);
        assert!(
            steps(&samples, 3_000_000).len() == 2,
            "an unfinished step is left out"
        );
    }
}
