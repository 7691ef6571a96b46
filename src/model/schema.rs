//! How the request's loosely typed fields are described in the Evaluation resource's schema (a Kubernetes
//! structural schema, generated with schemars): what JSON Schema cannot say about them structurally is left to
//! the validator, which refuses what the schema lets through.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object of any keys and values (`model_args`, `gen_kwargs`, `metadata`).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// An integer or a string (`batch_size`: `8`, `"auto"`, `"auto:4"`).
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-int-or-string": true, "nullable": true})
}

/// Any JSON value (`seed`: an integer or a list; `apply_chat_template`: a boolean or a name).
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true, "nullable": true})
}

/// A number, or null where lm-eval reported none.
pub fn nullable_number(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "number", "nullable": true})
}
