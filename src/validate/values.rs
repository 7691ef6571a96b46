//! The typed values a valid request holds where the API takes loosely typed JSON: each is parsed once
//! here, and knows how to show itself on lm-eval's command line and back in the API.

use serde_json::{Number, Value};

pub use crate::model::MODEL_TYPES;
use crate::model::schema::whole_number as whole;

/// One of the model types lm-eval registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelType(&'static str);

impl ModelType {
    pub fn parse(raw: &str) -> Option<Self> {
        MODEL_TYPES.iter().find(|m| **m == raw).map(|m| Self(m))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// An lm-eval task or group name: letters, digits, `_`, `-`, `.`; never a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskName(String);

impl TaskName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let starts_ok = raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if raw.is_empty() || raw.len() > 200 || !ok_chars || !starts_ok || raw.contains("..") || raw.ends_with(".yaml")
        {
            return Err(format!(
                "{raw:?} is not an lm-eval task name (letters, digits, '_', '-', '.'; starting with a letter or digit; no paths)"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Counts from here on are refused: the largest a double holds exactly, rounded down to a power of ten.
const MAX_COUNT: u64 = 1_000_000_000_000_000;

/// `--limit`: a number of documents per task, or a fraction of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Count(u64),
    Fraction(f64),
}

impl Limit {
    /// An integer count ≥ 1 (`5.0` counts as `5`) or a fraction strictly between 0 and 1.
    pub fn parse(raw: &Number) -> Option<Self> {
        if let Some(n) = whole(raw) {
            return u64::try_from(n).ok().filter(|n| (1..MAX_COUNT).contains(n)).map(Self::Count);
        }
        let x = raw.as_f64()?;
        (x > 0.0 && x < 1.0).then_some(Self::Fraction(x))
    }

    pub fn to_number(self) -> Number {
        match self {
            Self::Count(n) => Number::from(n),
            Self::Fraction(x) => Number::from_f64(x).unwrap_or_else(|| Number::from(0)),
        }
    }
}

/// `--batch_size`: a fixed size, `auto`, or `auto:N` (re-detect the size N times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Fixed(u64),
    Auto,
    AutoTimes(u32),
}

impl BatchSize {
    pub fn parse(raw: &Value) -> Option<Self> {
        let fixed = |n: u64| (1..=1_000_000).contains(&n).then_some(Self::Fixed(n));
        match raw {
            Value::Number(n) => whole(n).and_then(|n| u64::try_from(n).ok()).and_then(fixed),
            Value::String(s) if s == "auto" => Some(Self::Auto),
            Value::String(s) => match s.strip_prefix("auto:") {
                Some(n) => n.parse().ok().filter(|n| *n >= 1).map(Self::AutoTimes),
                None => s.parse().ok().and_then(fixed),
            },
            _ => None,
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            Self::Fixed(n) => Value::from(n),
            Self::Auto | Self::AutoTimes(_) => Value::String(self.to_string()),
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
            Self::AutoTimes(n) => write!(f, "auto:{n}"),
        }
    }
}

/// `--apply_chat_template`: the model's default template, or one by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    Default,
    Named(String),
}

impl ChatTemplate {
    /// `true`, `false` (none: `Ok(None)`) or a template name.
    pub fn parse(raw: &Value) -> Result<Option<Self>, &'static str> {
        const EXPECTED: &str = "must be a boolean or a chat template name";
        match raw {
            Value::Bool(true) => Ok(Some(Self::Default)),
            Value::Bool(false) => Ok(None),
            Value::String(name) => {
                let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                    && name.len() <= 200
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                    && !name.contains("..");
                if ok { Ok(Some(Self::Named(name.clone()))) } else { Err(EXPECTED) }
            }
            _ => Err(EXPECTED),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Self::Default => Value::Bool(true),
            Self::Named(name) => Value::String(name.clone()),
        }
    }
}

/// `--seed`: one seed for all four generators, or one each for `[python, numpy, torch, fewshot]`
/// (`None` leaves that generator unseeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    All(i128),
    Each([Option<i128>; 4]),
}

impl Seed {
    pub fn parse(raw: &Value) -> Option<Self> {
        let integer = |v: &Value| {
            v.as_number().and_then(whole).filter(|n| (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(n))
        };
        match raw {
            Value::Number(_) => integer(raw).map(Self::All),
            Value::Array(items) if items.len() == 4 => {
                let mut each = [None; 4];
                for (slot, item) in each.iter_mut().zip(items) {
                    *slot = if item.is_null() { None } else { Some(integer(item)?) };
                }
                Some(Self::Each(each))
            }
            _ => None,
        }
    }

    pub fn to_value(self) -> Value {
        let number = |n: i128| Number::from_i128(n).map_or(Value::Null, Value::Number);
        match self {
            Self::All(n) => number(n),
            Self::Each(each) => Value::Array(each.iter().map(|n| n.map_or(Value::Null, number)).collect()),
        }
    }

    /// lm-eval's `--seed` text: `N`, or `a,b,c,d` with `None` for an unseeded generator.
    pub fn to_arg(self) -> String {
        match self {
            Self::All(n) => n.to_string(),
            Self::Each(each) => each
                .iter()
                .map(|n| n.map_or_else(|| "None".to_string(), |n| n.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_round_trip_to_their_normal_form() {
        let limit = |v: Value| Limit::parse(v.as_number().expect("number")).map(Limit::to_number);
        assert_eq!(limit(json!(5.0)), Some(Number::from(5)));
        assert_eq!(limit(json!(0.25)).map(|n| n.to_string()).as_deref(), Some("0.25"));
        assert_eq!(limit(json!(0)), None);
        assert_eq!(BatchSize::parse(&json!("8")).map(BatchSize::to_value), Some(json!(8)));
        assert_eq!(BatchSize::parse(&json!("auto:4")).map(|b| b.to_string()).as_deref(), Some("auto:4"));
        assert_eq!(BatchSize::parse(&json!("auto:0")), None);
        assert_eq!(ChatTemplate::parse(&json!(false)), Ok(None));
        assert!(ChatTemplate::parse(&json!("../x")).is_err());
        let seed = Seed::parse(&json!([1, null, -3, u64::MAX])).expect("seed");
        assert_eq!(seed.to_arg(), format!("1,None,-3,{}", u64::MAX));
        assert_eq!(seed.to_value(), json!([1, null, -3, u64::MAX]));
        assert_eq!(Seed::parse(&json!(1.5)), None);
        assert_eq!(Seed::parse(&json!([3.0, null, 1, 2])).map(Seed::to_arg).as_deref(), Some("3,None,1,2"));
        assert_eq!(Seed::parse(&json!(1e30)), None);
        assert_eq!(BatchSize::parse(&json!(8.0)), Some(BatchSize::Fixed(8)));
        assert_eq!(limit(json!(1_000_000_000_000_000_u64)), None);
    }
}
