//! The two text formats `/metrics` speaks: OpenMetrics 1.0 (what `prometheus-client`
//! writes; served when the scraper's `Accept` asks for it, as Prometheus does) and the
//! classic Prometheus text format 0.0.4 (served otherwise: `promtool check metrics`,
//! curl, older scrapers). The classic text is derived from the OpenMetrics text, so
//! every component registers its metrics once.

/// The content type of each format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's content type.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics (with a non-zero weight).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut params = range.split(';').map(str::trim);
            params.next() == Some("application/openmetrics-text")
                && params.all(|param| match param.strip_prefix("q=") {
                    Some(weight) => weight.parse::<f32>().map_or(true, |w| w > 0.0),
                    None => true,
                })
        })
    })
}

/// The family being rewritten: its OpenMetrics name and type.
struct Family {
    name: String,
    kind: String,
}

/// Rewrites OpenMetrics text into the classic format: a counter family `x` is named
/// `x_total` in its `# HELP`/`# TYPE` lines (as its samples are), an info family
/// `x` becomes the gauge `x_info`, state sets become gauges, `unknown` becomes
/// `untyped`; `# UNIT`, `# EOF`, `_created` samples and exemplars are dropped.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut family: Option<Family> = None;
    for line in openmetrics.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default();
            match keyword {
                "HELP" => help = Some((name, rest)),
                "TYPE" => {
                    let (classic_name, classic_kind) = classic_family(name, rest);
                    if let Some((help_name, text)) = help.take()
                        && help_name == name
                    {
                        out.push_str(&format!("# HELP {classic_name} {text}\n"));
                    }
                    out.push_str(&format!("# TYPE {classic_name} {classic_kind}\n"));
                    family = Some(Family {
                        name: name.to_string(),
                        kind: rest.to_string(),
                    });
                }
                _ => {} // UNIT, EOF
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        // An exemplar follows the value after " # ".
        let sample = line.split(" # ").next().unwrap_or(line);
        let sample_name = sample.split(['{', ' ']).next().unwrap_or_default();
        if let Some(f) = &family
            && matches!(f.kind.as_str(), "counter" | "histogram" | "summary")
            && sample_name.strip_suffix("_created") == Some(f.name.as_str())
        {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The classic name and type of the OpenMetrics family `name` of type `kind`.
fn classic_family(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" if name.ends_with("_total") => (name.to_string(), "counter"),
        "counter" => (format!("{name}_total"), "counter"),
        "gauge" => (name.to_string(), "gauge"),
        "histogram" => (name.to_string(), "histogram"),
        "summary" => (name.to_string(), "summary"),
        "info" => (format!("{name}_info"), "gauge"),
        "stateset" => (name.to_string(), "gauge"),
        "gaugehistogram" => (name.to_string(), "histogram"),
        _ => (name.to_string(), "untyped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_name_and_openmetrics_only_lines_go() {
        let om = "# HELP hm_requests Requests served.\n# TYPE hm_requests counter\n\
                  hm_requests_total{code=\"ok\"} 3 # {trace=\"a\"} 1.0\n\
                  hm_requests_created 1.7e9\n\
                  # HELP hm_build Build.\n# TYPE hm_build info\nhm_build_info{v=\"1\"} 1\n\
                  # HELP hm_seconds Latency.\n# TYPE hm_seconds histogram\n# UNIT hm_seconds seconds\n\
                  hm_seconds_bucket{le=\"+Inf\"} 1\nhm_seconds_sum 0.5\nhm_seconds_count 1\n# EOF\n";
        let classic = to_classic(om);
        assert_eq!(
            classic,
            "# HELP hm_requests_total Requests served.\n# TYPE hm_requests_total counter\n\
             hm_requests_total{code=\"ok\"} 3\n\
             # HELP hm_build_info Build.\n# TYPE hm_build_info gauge\nhm_build_info{v=\"1\"} 1\n\
             # HELP hm_seconds Latency.\n# TYPE hm_seconds histogram\n\
             hm_seconds_bucket{le=\"+Inf\"} 1\nhm_seconds_sum 0.5\nhm_seconds_count 1\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
