//! The exact `lm_eval` command line for a validated request. Pure: values in, values out.
//!
//! lm-eval 0.4.13 reads `--model_args`, `--gen_kwargs` and `--metadata` either as `k=v,k2=v2`
//! (values coerced: `1` becomes an int, `True` a bool, `[..]` a list) or as one JSON object
//! (taken verbatim). We use the short form only when lm-eval's coercion gives back exactly the
//! value we were sent, and JSON otherwise, so nothing is ever mangled.

use serde_json::{Map, Value};

use crate::validate::{ChatTemplate, TaskName, ValidRequest};

/// Where a backend runs lm-eval: the program and the paths it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// argv[0]: the `lm_eval` executable as the backend invokes it.
    pub program: String,
    pub output_path: String,
    /// Task directories the server always includes.
    pub task_dirs: Vec<String>,
    /// Where the request's `inline_tasks` are written, if it has any.
    pub inline_tasks_dir: String,
    /// Where the generated config file goes, when one is needed.
    pub config_path: String,
}

/// The argv, plus the generated `--config` YAML when the argv refers to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmEvalCommand {
    pub argv: Vec<String>,
    pub config_yaml: Option<String>,
}

pub fn build(valid: &ValidRequest, plan: &RunPlan) -> LmEvalCommand {
    let mut argv = vec![plan.program.clone(), "run".into(), "--model".into(), valid.model.as_str().into()];
    push_dict(&mut argv, "--model_args", &valid.model_args);
    let tasks: Vec<&str> = valid.tasks.iter().map(TaskName::as_str).collect();
    argv.extend(["--tasks".into(), tasks.join(",")]);
    if let Some(n) = valid.num_fewshot {
        argv.extend(["--num_fewshot".into(), n.to_string()]);
    }
    if let Some(limit) = valid.limit {
        argv.extend(["--limit".into(), limit.to_number().to_string()]);
    }
    if let Some(batch) = valid.batch_size {
        argv.extend(["--batch_size".into(), batch.to_string()]);
    }
    if let Some(n) = valid.max_batch_size {
        argv.extend(["--max_batch_size".into(), n.to_string()]);
    }
    push_dict(&mut argv, "--gen_kwargs", &valid.gen_kwargs);
    if valid.log_samples {
        argv.push("--log_samples".into());
    }
    match &valid.chat_template {
        Some(ChatTemplate::Named(name)) => argv.push(format!("--apply_chat_template={name}")),
        Some(ChatTemplate::Default) => argv.push("--apply_chat_template".into()),
        None => {}
    }
    if let Some(multiturn) = valid.fewshot_as_multiturn {
        argv.push(format!("--fewshot_as_multiturn={multiturn}"));
    }
    if let Some(text) = &valid.system_instruction {
        argv.push(format!("--system_instruction={text}"));
    }
    if let Some(seed) = valid.seed {
        argv.push(format!("--seed={}", seed.to_arg()));
    }
    if valid.predict_only {
        argv.push("--predict_only".into());
    }
    push_dict(&mut argv, "--metadata", &valid.metadata);
    if valid.allow_code_execution {
        argv.push("--confirm_run_unsafe_code".into());
    }

    let mut include_paths = plan.task_dirs.clone();
    if !valid.inline_tasks.is_empty() {
        include_paths.push(plan.inline_tasks_dir.clone());
    }
    include_paths.extend(valid.include_path.clone());
    let mut config_yaml = None;
    match include_paths.as_slice() {
        [] => {}
        [one] => argv.extend(["--include_path".into(), one.clone()]),
        // The flag takes one directory; lm-eval's config file takes a list.
        many => {
            let config = serde_json::json!({ "include_path": many });
            config_yaml = Some(yaml_serde::to_string(&config).unwrap_or_default());
            argv.extend(["--config".into(), plan.config_path.clone()]);
        }
    }
    argv.extend(["--output_path".into(), plan.output_path.clone()]);
    LmEvalCommand { argv, config_yaml }
}

fn push_dict(argv: &mut Vec<String>, flag: &str, map: &Map<String, Value>) {
    if map.is_empty() {
        return;
    }
    argv.push(flag.to_string());
    argv.push(encode_dict(map));
}

/// `k=v,k2=v2` when every value survives lm-eval's coercion unchanged, else a JSON object.
pub fn encode_dict(map: &Map<String, Value>) -> String {
    let short: Option<Vec<String>> = map.iter().map(|(k, v)| plain_value(v).map(|v| format!("{k}={v}"))).collect();
    match short {
        Some(pairs) => pairs.join(","),
        None => Value::Object(map.clone()).to_string(),
    }
}

/// The text for `v` in `k=v` form, if lm-eval reads it back as exactly `v`.
fn plain_value(value: &Value) -> Option<String> {
    match value {
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        // `isnumeric()` makes digits an int; a leading '-' would make it a float.
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        Value::Number(n) if n.is_f64() => n.as_f64().filter(|x| x.is_finite() && *x >= 0.0).map(|_| n.to_string()),
        Value::String(s) if is_plain_string(s) => Some(s.clone()),
        _ => None,
    }
}

/// A string that Python's `float()`, `ast.literal_eval()` and the true/false check all leave alone,
/// and that holds none of `,` `=` quotes or brackets.
fn is_plain_string(s: &str) -> bool {
    const PYTHON_WORDS: &[&str] = &["true", "false", "none", "inf", "infinity", "nan"];
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@'))
        && !PYTHON_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Policy;
    use serde_json::json;

    fn plan() -> RunPlan {
        RunPlan {
            program: "lm_eval".into(),
            output_path: "/out".into(),
            task_dirs: vec![],
            inline_tasks_dir: "/eval/tasks".into(),
            config_path: "/eval/config.yaml".into(),
        }
    }

    fn argv(request: Value, plan: &RunPlan) -> LmEvalCommand {
        let request = serde_json::from_value(request).expect("request");
        build(&ValidRequest::parse(request, &Policy::default()).expect("valid"), plan)
    }

    #[test]
    fn simple_request_uses_the_short_forms() {
        let cmd = argv(
            json!({"model": "hf", "model_args": {"pretrained": "EleutherAI/pythia-70m", "dtype": "float32", "max_length": 2048},
                   "tasks": ["arc_easy", "hellaswag"], "num_fewshot": 0, "limit": 10, "batch_size": "auto:4"}),
            &plan(),
        );
        assert_eq!(
            cmd.argv,
            [
                "lm_eval",
                "run",
                "--model",
                "hf",
                "--model_args",
                "pretrained=EleutherAI/pythia-70m,dtype=float32,max_length=2048",
                "--tasks",
                "arc_easy,hellaswag",
                "--num_fewshot",
                "0",
                "--limit",
                "10",
                "--batch_size",
                "auto:4",
                "--output_path",
                "/out"
            ]
        );
        assert_eq!(cmd.config_yaml, None);
    }

    #[test]
    fn values_the_short_form_would_change_go_as_json() {
        for value in [
            json!("a,b"),
            json!("x=y"),
            json!("123"),
            json!("True"),
            json!("none"),
            json!(-1),
            json!("it's"),
            json!("1e5"),
            json!(""),
        ] {
            let cmd = argv(json!({"model": "dummy", "tasks": ["t"], "model_args": {"k": value}}), &plan());
            let encoded = &cmd.argv[5];
            assert!(encoded.starts_with('{'), "{value} encoded as {encoded}");
            let back: Value = serde_json::from_str(encoded).expect("json");
            assert_eq!(back, json!({"k": value}));
        }
    }

    #[test]
    fn several_task_directories_go_through_a_config_file() {
        let mut plan = plan();
        plan.task_dirs = vec!["/srv/tasks".into()];
        let cmd = argv(json!({"model": "dummy", "tasks": ["t"], "inline_tasks": {"t.yaml": "task: t"}}), &plan);
        assert!(cmd.argv.windows(2).any(|w| w == ["--config", "/eval/config.yaml"]));
        let yaml: Value = yaml_serde::from_str(cmd.config_yaml.as_deref().expect("config")).expect("yaml");
        assert_eq!(yaml, json!({"include_path": ["/srv/tasks", "/eval/tasks"]}));
    }

    #[test]
    fn free_text_and_seeds_are_attached_to_their_flags() {
        let cmd = argv(
            json!({"model": "dummy", "tasks": ["t"], "system_instruction": "--tasks evil", "seed": [1, null, -3, 4],
                   "apply_chat_template": "chatml", "fewshot_as_multiturn": false}),
            &plan(),
        );
        assert!(cmd.argv.contains(&"--system_instruction=--tasks evil".to_string()));
        assert!(cmd.argv.contains(&"--seed=1,None,-3,4".to_string()));
        assert!(cmd.argv.contains(&"--apply_chat_template=chatml".to_string()));
        assert!(cmd.argv.contains(&"--fewshot_as_multiturn=false".to_string()));
    }
}
