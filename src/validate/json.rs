//! JSON in, a typed value out, or a problem naming the field: how every request body (and every Evaluation
//! spec) is read, so the same mistake gets the same message wherever it is made.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `bytes` as a `T`; malformed JSON, a wrong type or an unknown field is a `Malformed` problem naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let mut message = inner.to_string();
        if inner.is_data() {
            // Where in the text is beside the point once the field is named, and differs between a request
            // body and the same spec inside an Evaluation.
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            message.truncate(message.strip_suffix(&position).map_or(message.len(), str::len));
        }
        // The path names the field (an unknown one included); a missing field is named only in the message.
        let field = (path != "." && path != "?").then_some(path).or_else(|| {
            message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_string())
        });
        let detail = match &field {
            Some(field) if inner.is_data() => format!("{field}: {message}"),
            _ => format!("malformed JSON: {message}"),
        };
        ApiError::Malformed { field, detail }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        limit: Option<u32>,
    }

    fn detail(text: &str) -> (Option<String>, String) {
        match parse_json::<Body>(text.as_bytes()).expect_err("refused") {
            ApiError::Malformed { field, detail } => (field, detail),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_field_error_reads_the_same_wherever_the_field_stands() {
        let (field, compact) = detail(r#"{"limt":3}"#);
        let (_, spaced) = detail("{\n\n   \"limt\": 3}");
        assert_eq!(field.as_deref(), Some("limt"));
        assert_eq!(compact, spaced);
        assert!(compact.starts_with("limt: unknown field `limt`"), "{compact}");
        assert!(!compact.contains("line"), "{compact}");
    }

    #[test]
    fn malformed_json_says_where() {
        let (field, detail) = detail(r#"{"limit": 3"#);
        assert_eq!(field, None);
        assert!(detail.starts_with("malformed JSON: ") && detail.contains("line 1"), "{detail}");
    }
}
