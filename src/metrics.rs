//! CloudWatch metrics as Embedded Metric Format (EMF) log lines: one JSON object per line on
//! stdout, which CloudWatch Logs turns into metrics. No API call on the hot path.
//!
//! Namespace `wati-ingest`; every line has the `Stack, Function` dimensions (the stack from
//! `STACK_NAME`, which the template sets: two stacks in one account keep apart metrics), and lines
//! about one event kind also `Stack, Function, Kind`. Metric names are listed in
//! `docs/runbook.md`.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "wati-ingest";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One EMF line under construction.
#[derive(Debug, Clone)]
pub struct MetricLine {
    function: String,
    kind: Option<String>,
    metrics: Vec<(&'static str, Unit, f64)>,
}

impl MetricLine {
    pub fn new(function: &str) -> Self {
        MetricLine {
            function: function.to_owned(),
            kind: None,
            metrics: Vec::new(),
        }
    }

    /// Adds the `Kind` dimension (the normalised event type).
    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = Some(kind.to_owned());
        self
    }

    pub fn metric(mut self, name: &'static str, unit: Unit, value: f64) -> Self {
        self.metrics.push((name, unit, value));
        self
    }

    pub fn count(self, name: &'static str) -> Self {
        self.metric(name, Unit::Count, 1.0)
    }

    /// The JSON line of this process's stack, stamped `timestamp_ms` (milliseconds since the
    /// epoch).
    pub fn render(&self, timestamp_ms: i64) -> String {
        self.render_in(stack_name(), timestamp_ms)
    }

    /// The JSON line of `stack`'s metrics, stamped `timestamp_ms`.
    pub fn render_in(&self, stack: &str, timestamp_ms: i64) -> String {
        let mut dimensions = vec![json!(["Stack", "Function"])];
        let mut line = Map::new();
        line.insert("Stack".into(), Value::String(stack.to_owned()));
        line.insert("Function".into(), Value::String(self.function.clone()));
        if let Some(kind) = &self.kind {
            dimensions.push(json!(["Stack", "Function", "Kind"]));
            line.insert("Kind".into(), Value::String(kind.clone()));
        }
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.name()}))
            .collect();
        for (name, _, value) in &self.metrics {
            line.insert((*name).to_owned(), json!(value));
        }
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(line).to_string()
    }

    /// Writes the line to stdout, where the Lambda runtime hands it to CloudWatch Logs.
    pub fn emit(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        println!("{}", self.render(now_ms));
    }
}

/// The `Stack` dimension's value: `STACK_NAME` (the template sets it to the stack's name), read
/// once; `unnamed` where it is unset (a dimension value cannot be empty).
pub fn stack_name() -> &'static str {
    static STACK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STACK.get_or_init(|| {
        std::env::var("STACK_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unnamed".into())
    })
}

/// Where the router sends its metrics: nowhere locally, EMF on Lambda.
#[derive(Debug, Clone, Default)]
pub enum MetricsSink {
    #[default]
    Off,
    Emf,
}

impl MetricsSink {
    pub fn emit(&self, line: MetricLine) {
        if let MetricsSink::Emf = self {
            line.emit();
        }
    }
}

/// Checks a line against the EMF specification's structural rules; used by the tests and by
/// anyone adding a metric. Returns what is wrong.
pub fn validate(line: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let root = value.as_object().ok_or("not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    aws.get("Timestamp")
        .and_then(Value::as_i64)
        .filter(|t| *t > 0)
        .ok_or("_aws.Timestamp must be a positive integer (ms)")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics must be a non-empty array")?;
    for directive in directives {
        let namespace = directive["Namespace"].as_str().unwrap_or_default();
        if namespace.is_empty() || namespace.len() > 255 {
            return Err("Namespace must be 1-255 characters".into());
        }
        let dimension_sets = directive["Dimensions"]
            .as_array()
            .ok_or("Dimensions missing")?;
        for set in dimension_sets {
            let keys = set.as_array().ok_or("a dimension set must be an array")?;
            if keys.len() > 30 {
                return Err("more than 30 dimensions in a set".into());
            }
            for key in keys {
                let key = key.as_str().ok_or("dimension keys must be strings")?;
                if !root.get(key).is_some_and(Value::is_string) {
                    return Err(format!("dimension {key} has no string value"));
                }
            }
        }
        let metrics = directive["Metrics"].as_array().ok_or("Metrics missing")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err("1-100 metrics per directive".into());
        }
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("metric without Name")?;
            if !root.get(name).is_some_and(Value::is_number) {
                return Err(format!("metric {name} has no numeric value"));
            }
            let unit = metric["Unit"].as_str().unwrap_or("None");
            const UNITS: [&str; 4] = ["Count", "Milliseconds", "Seconds", "None"];
            if !UNITS.contains(&unit) {
                return Err(format!("unit {unit} is not one we emit"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_valid_emf() {
        let line = MetricLine::new("processor")
            .kind("sentMessageREAD")
            .count("Applied")
            .metric("ApplyLag", Unit::Seconds, 3.0)
            .render_in("wati-prod", 1_764_238_453_000);
        validate(&line).unwrap();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["Applied"], 1.0);
        assert_eq!(value["Kind"], "sentMessageREAD");
        assert_eq!(value["Stack"], "wati-prod");
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack", "Function"], ["Stack", "Function", "Kind"]]),
            "every set names the stack: two stacks in one account do not share a metric"
        );
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "wati-ingest"
        );
    }

    #[test]
    fn the_validator_catches_broken_lines() {
        assert!(validate("{}").is_err());
        assert!(validate(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["F"]],"Metrics":[{"Name":"A","Unit":"Count"}]}]},"A":1}"#).is_err(), "dimension value missing");
        assert!(validate(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[],"Metrics":[{"Name":"A","Unit":"Count"}]}]}}"#).is_err(), "metric value missing");
        assert!(validate(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[],"Metrics":[{"Name":"A","Unit":"Count"}]}]},"A":2}"#).is_ok());
    }
}
