//! Credentials in the wrong place: names that carry one however they are spelled, and values that are one.
//! A request passes credentials by reference (`env[].secret`), never as a value that is stored, shown to
//! every reader and put on a command line.

use serde_json::Value;

/// Fragments that make a name a credential wherever they stand in it (compared lower-case, without separators).
const CREDENTIAL_FRAGMENTS: &[&str] = &[
    "apikey",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "authorization",
    "bearer",
    "privatekey",
    "accesskey",
    "sessionkey",
    "signingkey",
    "cookie",
];

/// Endings that make a name a credential (`hf_token`, `OPENAI_KEY`, `db_pwd`).
const CREDENTIAL_ENDINGS: &[&str] = &["token", "key", "pwd", "auth"];

/// A tokenizer's special tokens end in "token" without being credentials (`add_bos_token`, `pad_token`).
const TOKENIZER_WORDS: &[&str] = &["bos", "eos", "pad", "sep", "unk", "cls", "mask", "addbos", "addeos", "addspecial"];

/// The name lower-cased with everything but letters and digits removed: `OPENAI-Api_Key` → `openaiapikey`.
fn normalised(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether `name` names a credential (`HF_TOKEN`, `openaiapikey`, `Authorization`, `DB_PASSWORD`).
pub fn is_credential_name(name: &str) -> bool {
    let name = normalised(name);
    if CREDENTIAL_FRAGMENTS.iter().any(|fragment| name.contains(fragment)) {
        return true;
    }
    CREDENTIAL_ENDINGS.iter().any(|ending| {
        name.strip_suffix(ending).is_some_and(|stem| !(*ending == "token" && TOKENIZER_WORDS.contains(&stem)))
    })
}

/// Well-known shapes of credential values: a prefix and the least number of characters after it.
const CREDENTIAL_PREFIXES: &[(&str, usize)] =
    &[("sk-", 20), ("hf_", 30), ("ghp_", 30), ("github_pat_", 30), ("xoxb-", 20), ("xoxp-", 20), ("AKIA", 16)];

/// Whether a text value is a credential: a URL with a password in it, an `Authorization` value, or a key
/// of a well-known shape.
pub fn is_credential_value(text: &str) -> bool {
    let text = text.trim();
    if let Some((_, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.split_once(':').is_some_and(|(_, password)| !password.is_empty())
        {
            return true;
        }
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("bearer ") || lower.starts_with("basic ") || lower.starts_with("token ") {
        return true;
    }
    CREDENTIAL_PREFIXES.iter().any(|(prefix, least)| {
        text.strip_prefix(prefix).is_some_and(|rest| {
            rest.len() >= *least && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
    })
}

/// The path (below `field`) of the first credential in `value`, looking into lists and objects.
pub fn credential_in(field: &str, value: &Value) -> Option<String> {
    match value {
        Value::String(text) if is_credential_value(text) => Some(field.to_string()),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| credential_in(&format!("{field}[{i}]"), item))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let field = format!("{field}.{key}");
            if is_credential_name(key) { Some(field) } else { credential_in(&field, item) }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_compared_without_case_or_separators() {
        for name in [
            "HF_TOKEN",
            "hftoken",
            "api_key",
            "openaiapikey",
            "OPENAI-Api_Key",
            "Authorization",
            "bearer",
            "DB_PASSWORD",
            "aws_secret_access_key",
            "use_auth_token",
            "x-auth",
            "private_key",
        ] {
            assert!(is_credential_name(name), "{name} is a credential");
        }
        for name in [
            "tokenizer",
            "tokenized_requests",
            "max_tokens",
            "max_gen_toks",
            "add_bos_token",
            "pad_token",
            "keyword",
            "monkeys",
            "pretrained",
            "base_url",
            "author",
        ] {
            assert!(!is_credential_name(name), "{name} is not a credential");
        }
    }

    #[test]
    fn values_that_are_credentials() {
        assert!(is_credential_value("postgres://app:hunter2@db:5432/evals"));
        assert!(is_credential_value("Bearer abc.def"));
        assert!(is_credential_value("sk-abcdefghijklmnopqrstuvwx"));
        assert!(is_credential_value(&format!("hf_{}", "a".repeat(34))));
        assert!(!is_credential_value("http://llm:8000/v1/completions"));
        assert!(!is_credential_value("https://user@example.com/x"), "a user without a password is no secret");
        assert!(!is_credential_value("sk-short"));
        assert!(!is_credential_value("a sentence about tokens"));
        assert_eq!(
            credential_in("gen_kwargs", &json!({"until": ["\n"], "headers": {"x_api_key": "v"}})).as_deref(),
            Some("gen_kwargs.headers.x_api_key")
        );
        assert_eq!(credential_in("metadata.u", &json!(["ok", "https://a:b@c"])).as_deref(), Some("metadata.u[1]"));
    }
}
