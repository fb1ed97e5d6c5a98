//! A small Prometheus registry, one per process (or per in-process test server),
//! rendered in the text exposition format (0.0.4) at `/metrics`.
//!
//! Families are created once and keep their label sets; recording is a read lock
//! and an atomic add once a label set has been seen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Bucket bounds, in seconds, for request durations: 0.5 ms to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct CounterFamily {
    help: &'static str,
    series: RwLock<BTreeMap<Labels, Arc<AtomicU64>>>,
}

#[derive(Default)]
struct GaugeFamily {
    help: &'static str,
    series: RwLock<BTreeMap<Labels, Arc<AtomicI64>>>,
}

struct HistogramSeries {
    /// Count of observations at or below each bound (not cumulative until render).
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum of observations in nanoseconds-like fixed point (value * 1e9).
    sum_nanos: AtomicU64,
}

struct HistogramFamily {
    help: &'static str,
    bounds: &'static [f64],
    series: RwLock<BTreeMap<Labels, Arc<HistogramSeries>>>,
}

/// A process's metrics.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    counters: RwLock<BTreeMap<&'static str, Arc<CounterFamily>>>,
    gauges: RwLock<BTreeMap<&'static str, Arc<GaugeFamily>>>,
    histograms: RwLock<BTreeMap<&'static str, Arc<HistogramFamily>>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn series_of<T>(
    series: &RwLock<BTreeMap<Labels, Arc<T>>>,
    labels: &[(&'static str, &str)],
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let key: Labels = labels
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    if let Some(found) = read(series).get(&key) {
        return found.clone();
    }
    write(series)
        .entry(key)
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

impl Registry {
    /// An empty registry, with no metric yet.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `value` to a counter. The name should end in `_total`.
    pub fn counter_add(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        let family = {
            let existing = read(&self.inner.counters).get(name).cloned();
            existing.unwrap_or_else(|| {
                write(&self.inner.counters)
                    .entry(name)
                    .or_insert_with(|| {
                        Arc::new(CounterFamily {
                            help,
                            series: RwLock::default(),
                        })
                    })
                    .clone()
            })
        };
        series_of(&family.series, labels, AtomicU64::default).fetch_add(value, Ordering::Relaxed);
    }

    /// The counter's series itself, for hot paths that add to it often without
    /// looking it up each time.
    pub fn counter_handle(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicU64> {
        self.counter_add(name, help, labels, 0);
        let family = read(&self.inner.counters).get(name).cloned();
        match family {
            Some(family) => series_of(&family.series, labels, AtomicU64::default),
            None => Arc::default(),
        }
    }

    /// The gauge's series itself, for hot paths.
    pub fn gauge_handle(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicI64> {
        self.gauge(name, help, labels)
    }

    /// Sets a gauge.
    pub fn gauge_set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: i64,
    ) {
        self.gauge(name, help, labels)
            .store(value, Ordering::Relaxed);
    }

    /// Adds to a gauge (negative to subtract).
    pub fn gauge_add(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        delta: i64,
    ) {
        self.gauge(name, help, labels)
            .fetch_add(delta, Ordering::Relaxed);
    }

    fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicI64> {
        let family = {
            let existing = read(&self.inner.gauges).get(name).cloned();
            existing.unwrap_or_else(|| {
                write(&self.inner.gauges)
                    .entry(name)
                    .or_insert_with(|| {
                        Arc::new(GaugeFamily {
                            help,
                            series: RwLock::default(),
                        })
                    })
                    .clone()
            })
        };
        series_of(&family.series, labels, AtomicI64::default)
    }

    /// Records one observation in a histogram with the given bucket bounds.
    pub fn histogram_observe(
        &self,
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let family = {
            let existing = read(&self.inner.histograms).get(name).cloned();
            existing.unwrap_or_else(|| {
                write(&self.inner.histograms)
                    .entry(name)
                    .or_insert_with(|| {
                        Arc::new(HistogramFamily {
                            help,
                            bounds,
                            series: RwLock::default(),
                        })
                    })
                    .clone()
            })
        };
        let series = series_of(&family.series, labels, || HistogramSeries {
            buckets: family.bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        });
        if let Some(index) = family.bounds.iter().position(|bound| value <= *bound) {
            series.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        series.count.fetch_add(1, Ordering::Relaxed);
        let nanos = (value.max(0.0) * 1e9) as u64;
        series.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current value of a counter, for tests and the console.
    pub fn counter_value(&self, name: &str, labels: &[(&'static str, &str)]) -> u64 {
        let Some(family) = read(&self.inner.counters).get(name).cloned() else {
            return 0;
        };
        let key: Labels = labels
            .iter()
            .map(|(label, value)| (*label, (*value).to_owned()))
            .collect();
        read(&family.series)
            .get(&key)
            .map(|value| value.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in read(&self.inner.counters).iter() {
            header(&mut out, name, family.help, "counter");
            for (labels, value) in read(&family.series).iter() {
                sample(
                    &mut out,
                    name,
                    labels,
                    None,
                    &value.load(Ordering::Relaxed).to_string(),
                );
            }
        }
        for (name, family) in read(&self.inner.gauges).iter() {
            header(&mut out, name, family.help, "gauge");
            for (labels, value) in read(&family.series).iter() {
                sample(
                    &mut out,
                    name,
                    labels,
                    None,
                    &value.load(Ordering::Relaxed).to_string(),
                );
            }
        }
        for (name, family) in read(&self.inner.histograms).iter() {
            header(&mut out, name, family.help, "histogram");
            let bucket_name = format!("{name}_bucket");
            for (labels, series) in read(&family.series).iter() {
                let mut cumulative = 0;
                for (bound, bucket) in family.bounds.iter().zip(&series.buckets) {
                    cumulative += bucket.load(Ordering::Relaxed);
                    let le = format_float(*bound);
                    sample(
                        &mut out,
                        &bucket_name,
                        labels,
                        Some(&le),
                        &cumulative.to_string(),
                    );
                }
                let count = series.count.load(Ordering::Relaxed);
                sample(
                    &mut out,
                    &bucket_name,
                    labels,
                    Some("+Inf"),
                    &count.to_string(),
                );
                let sum = series.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                sample(
                    &mut out,
                    &format!("{name}_sum"),
                    labels,
                    None,
                    &format_float(sum),
                );
                sample(
                    &mut out,
                    &format!("{name}_count"),
                    labels,
                    None,
                    &count.to_string(),
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, value: &str) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (label, label_value) in labels {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{label}=\"{}\"", escape_label(label_value));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn format_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let registry = Registry::new();
        let labels = [
            ("service", "onair.user.v1.UserService"),
            ("method", "GetUser"),
        ];
        registry.counter_add("onair_test_total", "Requests.", &labels, 2);
        registry.gauge_set("onair_test_connections", "Open connections.", &[], 5);
        for value in [0.0001, 0.002, 20.0] {
            registry.histogram_observe(
                "onair_test_seconds",
                "Durations.",
                DURATION_BUCKETS,
                &labels,
                value,
            );
        }
        let text = registry.render();
        assert!(text.contains("# TYPE onair_test_total counter"));
        assert!(text.contains(
            "onair_test_total{service=\"onair.user.v1.UserService\",method=\"GetUser\"} 2"
        ));
        assert!(text.contains("onair_test_connections 5"));
        assert!(text.contains("le=\"0.0005\"} 1"));
        assert!(text.contains("le=\"0.0025\"} 2"));
        assert!(text.contains("le=\"10.0\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 3"));
        assert!(text.contains(
            "onair_test_seconds_count{service=\"onair.user.v1.UserService\",method=\"GetUser\"} 3"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::new();
        registry.counter_add(
            "onair_escape_total",
            "Escaping.",
            &[("path", "a\"b\\c\nd")],
            1,
        );
        assert!(registry.render().contains("path=\"a\\\"b\\\\c\\nd\""));
    }
}
