//! Repeated runs (`--rounds`) and side-by-side builds (`--versus`): what each run scored
//! as ratios to the raw responder measured in its own round, and the summary over the
//! rounds — the mean and range of each ratio per run and build, and the second build's
//! mean over the first's. On a shared machine only ratios taken in one sitting compare;
//! this makes such a sitting one command instead of a shell loop.

/// Which build a run used: the `--sluice` binary, or the `--versus` one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Build {
    First,
    Second,
}

/// The order of the builds in round `round` (from 0): alternating, so that a drift of the
/// machine over the sitting does not favour the build that always runs first.
pub(crate) fn order(round: usize, versus: bool) -> &'static [Build] {
    match (versus, round % 2) {
        (false, _) => &[Build::First],
        (true, 0) => &[Build::First, Build::Second],
        (true, _) => &[Build::Second, Build::First],
    }
}

/// One run's figures, as ratios to its round's raw rate.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// The run's name (`ingest`, `deliver 1 endpoint`, …).
    pub(crate) run: String,
    pub(crate) build: Build,
    pub(crate) accepted_of_raw: f64,
    pub(crate) delivered_of_raw: Option<f64>,
    /// Sluice's CPU per accepted message, ms.
    pub(crate) cpu_ms_per_message: f64,
}

/// The mean, least and greatest of some figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) mean: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    let first = *values.first()?;
    let (min, max) = values
        .iter()
        .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    Some(Spread {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        min,
        max,
    })
}

/// One run and build over all rounds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Summary {
    pub(crate) run: String,
    pub(crate) build: Build,
    pub(crate) runs: usize,
    pub(crate) accepted_of_raw: Spread,
    pub(crate) delivered_of_raw: Option<Spread>,
    pub(crate) cpu_ms_per_message: Spread,
}

/// Groups `samples` by run and build: runs in the order each first appears, the first
/// build before the second.
pub(crate) fn summarise(samples: &[Sample]) -> Vec<Summary> {
    let mut runs: Vec<&str> = Vec::new();
    for s in samples {
        if !runs.contains(&s.run.as_str()) {
            runs.push(&s.run);
        }
    }
    runs.into_iter()
        .flat_map(|run| [Build::First, Build::Second].map(|build| (run, build)))
        .filter_map(|(run, build)| {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.run == run && s.build == build)
                .collect();
            let pick = |f: fn(&Sample) -> f64| of.iter().map(|s| f(s)).collect::<Vec<_>>();
            let delivered: Vec<f64> = of.iter().filter_map(|s| s.delivered_of_raw).collect();
            Some(Summary {
                run: run.to_owned(),
                build,
                runs: of.len(),
                // `None` (no such group) when no run had this build.
                accepted_of_raw: spread(&pick(|s| s.accepted_of_raw))?,
                // Only when every run of the group delivered: a mean over some is no mean.
                delivered_of_raw: (delivered.len() == of.len())
                    .then(|| spread(&delivered))
                    .flatten(),
                cpu_ms_per_message: spread(&pick(|s| s.cpu_ms_per_message))?,
            })
        })
        .collect()
}

/// The second build's mean over the first's for `run`, of the delivered ratio where both
/// delivered, else of the accepted one.
pub(crate) fn versus_ratio(summaries: &[Summary], run: &str) -> Option<f64> {
    let find = |build| summaries.iter().find(|s| s.run == run && s.build == build);
    let (first, second) = (find(Build::First)?, find(Build::Second)?);
    match (first.delivered_of_raw, second.delivered_of_raw) {
        (Some(a), Some(b)) => Some(b.mean / a.mean),
        _ => Some(second.accepted_of_raw.mean / first.accepted_of_raw.mean),
    }
}

/// The summary as lines of text.
pub(crate) fn render(summaries: &[Summary]) -> Vec<String> {
    let range = |s: Spread| format!("{:.2} ({:.2}–{:.2})", s.mean, s.min, s.max);
    let mut lines = Vec::new();
    for s in summaries {
        let build = match s.build {
            Build::First => "--sluice",
            Build::Second => "--versus",
        };
        let mut line = format!(
            "{:<22} {build:<8} {} runs: accepted {} of raw",
            s.run,
            s.runs,
            range(s.accepted_of_raw)
        );
        if let Some(d) = s.delivered_of_raw {
            line.push_str(&format!("  delivered {}", range(d)));
        }
        line.push_str(&format!("  cpu {:.3} ms/msg", s.cpu_ms_per_message.mean));
        if s.build == Build::Second
            && let Some(ratio) = versus_ratio(summaries, &s.run)
        {
            line.push_str(&format!("  versus/sluice {ratio:.2}"));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(run: &str, build: Build, accepted: f64, delivered: Option<f64>) -> Sample {
        Sample {
            run: run.to_owned(),
            build,
            accepted_of_raw: accepted,
            delivered_of_raw: delivered,
            cpu_ms_per_message: accepted * 0.1,
        }
    }

    #[test]
    fn builds_alternate_their_order_round_by_round() {
        assert_eq!(order(0, false), &[Build::First]);
        assert_eq!(order(1, false), &[Build::First]);
        assert_eq!(order(0, true), &[Build::First, Build::Second]);
        assert_eq!(order(1, true), &[Build::Second, Build::First]);
        assert_eq!(order(2, true), &[Build::First, Build::Second]);
    }

    #[test]
    fn a_summary_gives_mean_and_range_per_run_and_build() {
        let samples = [
            sample("ingest", Build::Second, 0.40, None),
            sample("ingest", Build::First, 0.30, None),
            sample("deliver", Build::First, 0.20, Some(0.18)),
            sample("ingest", Build::First, 0.40, None),
            sample("ingest", Build::Second, 0.50, None),
            sample("deliver", Build::First, 0.24, Some(0.22)),
        ];
        let summaries = summarise(&samples);
        let keys: Vec<(&str, Build, usize)> = summaries
            .iter()
            .map(|s| (s.run.as_str(), s.build, s.runs))
            .collect();
        assert_eq!(
            keys,
            [
                ("ingest", Build::First, 2),
                ("ingest", Build::Second, 2),
                ("deliver", Build::First, 2)
            ]
        );
        let ingest = &summaries[0];
        assert!((ingest.accepted_of_raw.mean - 0.35).abs() < 1e-9);
        assert_eq!(
            (ingest.accepted_of_raw.min, ingest.accepted_of_raw.max),
            (0.30, 0.40)
        );
        assert_eq!(ingest.delivered_of_raw, None);
        let deliver = &summaries[2];
        let delivered = deliver.delivered_of_raw.expect("both runs delivered");
        assert!((delivered.mean - 0.20).abs() < 1e-9);
        assert!(
            (versus_ratio(&summaries, "ingest").expect("both builds") - 0.45 / 0.35).abs() < 1e-9
        );
        assert_eq!(versus_ratio(&summaries, "deliver"), None);
    }

    #[test]
    fn a_delivered_mean_needs_every_run_of_the_group_to_have_delivered() {
        let samples = [
            sample("mix", Build::First, 0.2, Some(0.2)),
            sample("mix", Build::First, 0.2, None),
        ];
        assert_eq!(summarise(&samples)[0].delivered_of_raw, None);
    }

    #[test]
    fn the_rendered_summary_names_the_builds_and_their_ratio() {
        let samples = [
            sample("ingest", Build::First, 0.30, None),
            sample("ingest", Build::Second, 0.33, None),
        ];
        let lines = render(&summarise(&samples));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("--sluice") && lines[0].contains("0.30 (0.30–0.30)"));
        assert!(lines[1].contains("--versus") && lines[1].contains("versus/sluice 1.10"));
    }
}
