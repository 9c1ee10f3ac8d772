//! Latency samples of one phase → throughput and percentiles, and their human formats.

use std::time::Duration;

/// What one phase measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseStats {
    /// Operations (or objects, for list and watch) completed.
    pub ops: u64,
    /// Wall-clock time of the whole phase.
    pub wall: Duration,
    /// Latency percentiles of the individual samples.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest sample.
    pub max: Duration,
    /// How many latency samples there were (pages for list, objects otherwise).
    pub samples: usize,
}

impl PhaseStats {
    /// Summarises `samples` for `ops` operations done in `wall`.
    pub fn new(ops: u64, wall: Duration, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        PhaseStats {
            ops,
            wall,
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
            samples: samples.len(),
        }
    }

    /// Operations per second over the wall-clock time.
    pub fn throughput(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1); zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `850 µs`, `1.24 ms`, `2.50 s`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// `12,345` (rounded, with thousands separators).
pub fn format_count(value: f64) -> String {
    let rounded = value.round().max(0.0) as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&samples, 0.50), ms(50));
        assert_eq!(percentile(&samples, 0.99), ms(99));
        assert_eq!(percentile(&samples, 1.0), ms(100));
        assert_eq!(percentile(&[ms(7)], 0.99), ms(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn stats_sort_samples_and_compute_throughput() {
        let stats = PhaseStats::new(4, Duration::from_secs(2), vec![ms(4), ms(1), ms(3), ms(2)]);
        assert_eq!(stats.p50, ms(2));
        assert_eq!(stats.max, ms(4));
        assert_eq!(stats.samples, 4);
        assert!((stats.throughput() - 2.0).abs() < 1e-9);
        assert_eq!(PhaseStats::new(1, Duration::ZERO, vec![]).throughput(), 0.0);
    }

    #[test]
    fn formats_are_human() {
        assert_eq!(format_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(format_duration(Duration::from_micros(1_240)), "1.24 ms");
        assert_eq!(format_duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(format_count(1_234_567.4), "1,234,567");
        assert_eq!(format_count(999.0), "999");
        assert_eq!(format_count(0.0), "0");
    }
}
