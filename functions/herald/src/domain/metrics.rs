//! CloudWatch Embedded Metric Format: one JSON line on stdout per flush, which CloudWatch Logs
//! turns into metrics without an API call (namespace `Herald`, dimension `Function`).

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "Herald";

/// Counters gathered during one invocation and written as one EMF line.
#[derive(Debug)]
pub struct Metrics {
    function: &'static str,
    dimension: Option<(&'static str, String)>,
    values: Vec<(&'static str, f64, &'static str)>,
}

impl Metrics {
    pub fn new(function: &'static str) -> Self {
        Self {
            function,
            dimension: None,
            values: Vec::new(),
        }
    }

    /// An extra dimension (e.g. `Reason`) for this line.
    pub fn with_dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimension = Some((name, value.into()));
        self
    }

    pub fn count(&mut self, name: &'static str, n: usize) -> &mut Self {
        if n > 0 {
            self.values.push((name, n as f64, "Count"));
        }
        self
    }

    pub fn millis(&mut self, name: &'static str, ms: f64) -> &mut Self {
        self.values.push((name, ms, "Milliseconds"));
        self
    }

    /// The EMF document, or `None` when nothing was recorded.
    pub fn document(&self, timestamp_ms: u64) -> Option<Value> {
        if self.values.is_empty() {
            return None;
        }
        let mut dims = vec!["Function"];
        let mut root = Map::new();
        root.insert("Function".into(), self.function.into());
        if let Some((name, value)) = &self.dimension {
            dims.push(name);
            root.insert((*name).into(), value.clone().into());
        }
        let defs: Vec<Value> = self.values.iter().map(|(n, _, unit)| json!({"Name": n, "Unit": unit})).collect();
        for (name, v, _) in &self.values {
            root.insert((*name).into(), json!(v));
        }
        root.insert(
            "_aws".into(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dims], "Metrics": defs}]}),
        );
        Some(Value::Object(root))
    }

    /// Writes the line. Stdout, not `tracing`: EMF must be a bare JSON object per line.
    pub fn flush(&mut self) {
        if let Some(doc) = self.document(crate::domain::cursor::now_millis()) {
            println!("{doc}");
        }
        self.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_shape() {
        let mut m = Metrics::new("dispatch").with_dimension("Reason", "too_large");
        m.count("Rejected", 2).count("Delivered", 0).millis("FanoutDuration", 1.5);
        let doc = m.document(42).unwrap();
        assert_eq!(doc["Function"], "dispatch");
        assert_eq!(doc["Reason"], "too_large");
        assert_eq!(doc["Rejected"], 2.0);
        assert!(doc.get("Delivered").is_none(), "zero counts are skipped");
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Herald");
        assert_eq!(cw["Dimensions"], json!([["Function", "Reason"]]));
        assert_eq!(cw["Metrics"][1], json!({"Name": "FanoutDuration", "Unit": "Milliseconds"}));
        assert!(Metrics::new("x").document(1).is_none());
    }
}
