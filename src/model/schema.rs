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

/// How the OpenAPI document states the request's union-typed and constrained fields, so that generated clients
/// get real types and a request the schema admits is one the validator takes (where a schema can say it).
mod openapi {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::{Array, Object, RefOr};

    fn integer(minimum: f64, maximum: f64) -> Object {
        ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(minimum)).maximum(Some(maximum)).build()
    }

    fn null() -> Object {
        ObjectBuilder::new().schema_type(Type::Null).build()
    }

    fn one_of(description: &str, items: impl IntoIterator<Item = Schema>) -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(description));
        for item in items {
            one_of = one_of.item(item);
        }
        RefOr::T(Schema::OneOf(one_of.build()))
    }

    pub fn model_type() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(crate::model::MODEL_TYPES.iter().copied()))
                .description(Some("An lm-eval model type, e.g. `hf`, `vllm`, `local-completions`, `dummy`."))
                .examples([serde_json::json!("dummy")])
                .build(),
        ))
    }

    pub fn task_names() -> RefOr<Schema> {
        let name = ObjectBuilder::new().schema_type(Type::String).pattern(Some(crate::model::TASK_NAME_PATTERN));
        RefOr::T(Schema::Array(
            ArrayBuilder::new()
                .items(name)
                .min_items(Some(1))
                .description(Some("lm-eval task or group names (duplicates are dropped)."))
                .examples([serde_json::json!(["lmeval_aas_mc"])])
                .build(),
        ))
    }

    pub fn limit() -> RefOr<Schema> {
        let fraction =
            ObjectBuilder::new().schema_type(Type::Number).exclusive_minimum(Some(0.0)).exclusive_maximum(Some(1.0));
        one_of(
            "A document count per task (an integer ≥ 1) or a fraction of the documents in (0, 1).",
            [
                Schema::Object(integer(1.0, 999_999_999_999_999.0)),
                Schema::Object(fraction.build()),
                Schema::Object(null()),
            ],
        )
    }

    pub fn batch_size() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^(auto(:[1-9][0-9]{0,8})?|[1-9][0-9]{0,5}|1000000)$"));
        one_of(
            "A fixed batch size (1–1,000,000), `auto`, or `auto:N` (re-detect the size N times).",
            [Schema::Object(integer(1.0, 1_000_000.0)), Schema::Object(text.build()), Schema::Object(null())],
        )
    }

    /// An object of any members (`model_args`, `gen_kwargs`, `metadata`, lm-eval's documents).
    pub fn free_form() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(true)))
                .build(),
        ))
    }

    pub fn chat_template() -> RefOr<Schema> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$"));
        one_of(
            "`true` for the model's default chat template, `false` for none, or a template's name.",
            [
                Schema::Object(ObjectBuilder::new().schema_type(Type::Boolean).build()),
                Schema::Object(name.build()),
                Schema::Object(null()),
            ],
        )
    }

    pub fn seed() -> RefOr<Schema> {
        let whole = || integer(-9_223_372_036_854_775_808.0, 18_446_744_073_709_551_615.0);
        let slot = OneOfBuilder::new().item(whole()).item(null()).build();
        let each: Array =
            ArrayBuilder::new().items(RefOr::T(Schema::OneOf(slot))).min_items(Some(4)).max_items(Some(4)).build();
        one_of(
            "One seed for all four generators, or one each for `[python, numpy, torch, fewshot]` (null leaves that one unseeded).",
            [Schema::Object(whole()), Schema::Array(each), Schema::Object(null())],
        )
    }
}

pub use openapi::{batch_size, chat_template, free_form, limit, model_type, seed, task_names};

/// A number as JSON Schema reads an integer: `8`, and `8.0` too; `None` for anything with a fraction (or past
/// what an `i128` holds).
pub fn whole_number(number: &serde_json::Number) -> Option<i128> {
    #[allow(clippy::cast_possible_truncation)]
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
        .or_else(|| number.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 1e38).map(|x| x as i128))
}

/// An optional integer as JSON Schema reads one: `8` and `8.0` alike (serde's integers refuse `8.0`).
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    let whole = whole_number(&number).ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))?;
    T::try_from(whole).map(Some).map_err(|_| D::Error::custom(format!("{number} is out of range")))
}
