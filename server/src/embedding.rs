//! Embeddings: what a request may embed, and the vector arithmetic Ollama applies to what the
//! runner pools (cut to `dimensions`, L2-normalised, never NaN).

use serde_json::Value;

use crate::error::HerdError;

/// `input` of `/api/embed` and `/v1/embeddings`: a string, or a list of strings.
pub fn parse_inputs(input: &Value) -> Result<Vec<String>, HerdError> {
    match input {
        Value::Null => Ok(Vec::new()),
        Value::String(text) if text.is_empty() => Ok(Vec::new()),
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| HerdError::bad_request("invalid input type")),
        _ => Err(HerdError::bad_request("invalid input type")),
    }
}

/// How the runner's vectors are shaped into the answer.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Keep only the first this many values.
    pub dimensions: Option<usize>,
    /// Scale to unit length (`/api/embed`, `/v1/embeddings`; not the legacy `/api/embeddings`).
    pub normalize: bool,
}

/// `dimensions` as the request gives it: absent, or a positive count.
pub fn parse_dimensions(dimensions: Option<i64>) -> Result<Option<usize>, HerdError> {
    match dimensions {
        None => Ok(None),
        Some(d) if d > 0 => Ok(Some(d as usize)),
        Some(d) => Err(HerdError::bad_request(format!("dimensions must be positive, got {d}"))),
    }
}

impl Shape {
    /// Applies the shape to one pooled vector.
    pub fn apply(self, mut vector: Vec<f32>) -> Result<Vec<f32>, HerdError> {
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(HerdError::Internal(
                "the model produced an embedding with NaN or infinite values".into(),
            ));
        }
        if let Some(dimensions) = self.dimensions {
            if dimensions > vector.len() {
                return Err(HerdError::bad_request(format!(
                    "dimensions ({dimensions}) is more than the model's embedding length ({})",
                    vector.len()
                )));
            }
            vector.truncate(dimensions);
        }
        if self.normalize {
            let norm = vector.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
            if norm > 0.0 {
                vector.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
            }
        }
        Ok(vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_a_string_or_a_list_of_strings() {
        assert_eq!(parse_inputs(&json!("hi")).unwrap(), vec!["hi"]);
        assert_eq!(parse_inputs(&json!(["a", "b"])).unwrap(), vec!["a", "b"]);
        assert!(parse_inputs(&json!([])).unwrap().is_empty());
        assert!(parse_inputs(&json!("")).unwrap().is_empty());
        for bad in [json!(3), json!([1, 2]), json!({"text": "a"}), json!(["a", null])] {
            assert_eq!(
                parse_inputs(&bad).unwrap_err().to_string(),
                "invalid input type",
                "{bad}"
            );
        }
    }

    #[test]
    fn vectors_are_cut_then_normalised() {
        let shape = Shape {
            dimensions: Some(2),
            normalize: true,
        };
        assert_eq!(shape.apply(vec![3.0, 4.0, 12.0]).unwrap(), vec![0.6, 0.8]);
        let legacy = Shape {
            dimensions: None,
            normalize: false,
        };
        assert_eq!(legacy.apply(vec![3.0, 4.0]).unwrap(), vec![3.0, 4.0]);
        assert_eq!(shape.apply(vec![0.0, 0.0]).unwrap(), vec![0.0, 0.0]);
        assert_eq!(shape.apply(vec![1.0]).unwrap_err().status(), 400);
        assert_eq!(shape.apply(vec![f32::NAN, 1.0]).unwrap_err().status(), 500);
        assert!(parse_dimensions(Some(0)).is_err());
        assert_eq!(parse_dimensions(Some(8)).unwrap(), Some(8));
    }
}
