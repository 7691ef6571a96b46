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
        let message = inner.to_string();
        // The path names the field (an unknown one included); a missing field is named only in the message.
        let field = (path != ".").then_some(path).or_else(|| {
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
