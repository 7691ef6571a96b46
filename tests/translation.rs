//! The argv we build, read back by lm-eval 0.4.13's own parser, yields exactly the requested configuration.
//! Needs `LMEVAL_PYTHON` (the venv's python; scripts/test sets it).

use std::io::Write;
use std::process::{Command, Stdio};

use lm_eval_aas::command::{RunPlan, build};
use lm_eval_aas::model::EvaluationRequest;
use lm_eval_aas::validate::{Policy, ValidRequest};
use serde_json::{Map, Value, json};

fn cases() -> Vec<(&'static str, Value)> {
    vec![
        ("minimal", json!({"model": "dummy", "tasks": ["arc_easy"]})),
        (
            "hf with plain args",
            json!({"model": "hf", "model_args": {"pretrained": "EleutherAI/pythia-70m", "dtype": "float32"}, "tasks": ["hellaswag"]}),
        ),
        (
            "several tasks",
            json!({"model": "dummy", "tasks": ["arc_easy", "arc_challenge", "mmlu_abstract_algebra", "lambada_openai"]}),
        ),
        (
            "task names with dots and dashes",
            json!({"model": "dummy", "tasks": ["bbh_cot_fewshot_boolean_expressions", "tinyBenchmarks.v1", "glue-cola"]}),
        ),
        ("duplicate tasks", json!({"model": "dummy", "tasks": ["a", "b", "a"]})),
        ("few-shot zero", json!({"model": "dummy", "tasks": ["t"], "num_fewshot": 0})),
        ("few-shot five", json!({"model": "dummy", "tasks": ["t"], "num_fewshot": 5})),
        ("limit count", json!({"model": "dummy", "tasks": ["t"], "limit": 10})),
        ("limit fraction", json!({"model": "dummy", "tasks": ["t"], "limit": 0.25})),
        ("limit float count", json!({"model": "dummy", "tasks": ["t"], "limit": 3.0})),
        ("batch size integer", json!({"model": "dummy", "tasks": ["t"], "batch_size": 8})),
        ("batch size auto", json!({"model": "dummy", "tasks": ["t"], "batch_size": "auto", "max_batch_size": 64})),
        ("batch size auto:N", json!({"model": "dummy", "tasks": ["t"], "batch_size": "auto:4"})),
        (
            "typed model args",
            json!({"model": "vllm", "model_args": {"pretrained": "m", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "enforce_eager": true, "max_model_len": 4096}, "tasks": ["t"]}),
        ),
        (
            "string that looks like an int",
            json!({"model": "hf", "model_args": {"revision": "123", "pretrained": "m"}, "tasks": ["t"]}),
        ),
        ("string that looks like a bool", json!({"model": "hf", "model_args": {"pretrained": "True"}, "tasks": ["t"]})),
        (
            "string None and nan",
            json!({"model": "hf", "model_args": {"a": "None", "b": "nan", "c": "inf", "d": "1e5"}, "tasks": ["t"]}),
        ),
        (
            "comma in value",
            json!({"model": "local-completions", "model_args": {"model": "a,b", "base_url": "http://127.0.0.1:8000/v1/completions"}, "tasks": ["t"]}),
        ),
        (
            "equals in value",
            json!({"model": "local-completions", "model_args": {"base_url": "http://h/v1?x=1&y=2"}, "tasks": ["t"]}),
        ),
        (
            "quotes and brackets",
            json!({"model": "hf", "model_args": {"pretrained": "it's \"quoted\" [x] {y}"}, "tasks": ["t"]}),
        ),
        (
            "negative and huge numbers",
            json!({"model": "hf", "model_args": {"neg": -3, "big": 18_446_744_073_709_551_615_u64, "negf": -0.5, "tiny": 1e-12}, "tasks": ["t"]}),
        ),
        (
            "unicode and newlines",
            json!({"model": "hf", "model_args": {"pretrained": "модель/名前 ✓", "prompt": "line1\nline2\ttab"}, "tasks": ["t"]}),
        ),
        (
            "value starting with a dash",
            json!({"model": "hf", "model_args": {"pretrained": "--tasks evil"}, "tasks": ["t"]}),
        ),
        (
            "empty string and backslashes",
            json!({"model": "hf", "model_args": {"empty": "", "path": "C:\\models\\x"}, "tasks": ["t"]}),
        ),
        ("json-looking string", json!({"model": "hf", "model_args": {"pretrained": "{\"a\": 1}"}, "tasks": ["t"]})),
        (
            "gen kwargs with stop list",
            json!({"model": "dummy", "tasks": ["t"], "gen_kwargs": {"temperature": 0, "until": ["\n\n", "Question:", ","], "do_sample": false, "max_gen_toks": 256}}),
        ),
        (
            "gen kwargs plain",
            json!({"model": "dummy", "tasks": ["t"], "gen_kwargs": {"temperature": 0.7, "top_p": 0.95}}),
        ),
        (
            "metadata nested",
            json!({"model": "dummy", "tasks": ["t"], "metadata": {"max_seq_lengths": [4096, 8192], "tokenizer": "gpt2", "nested": {"a": [1, {"b": null}]}}}),
        ),
        (
            "metadata merged with model args",
            json!({"model": "hf", "model_args": {"pretrained": "m"}, "tasks": ["t"], "metadata": {"pretrained": "override", "x": 1}}),
        ),
        ("log samples", json!({"model": "dummy", "tasks": ["t"], "log_samples": true})),
        ("predict only", json!({"model": "dummy", "tasks": ["t"], "predict_only": true})),
        (
            "chat template true",
            json!({"model": "hf", "model_args": {"pretrained": "m"}, "tasks": ["t"], "apply_chat_template": true}),
        ),
        (
            "chat template named, multiturn off",
            json!({"model": "hf", "model_args": {"pretrained": "m"}, "tasks": ["t"], "apply_chat_template": "chatml", "fewshot_as_multiturn": false}),
        ),
        (
            "chat template with multiturn",
            json!({"model": "hf", "model_args": {"pretrained": "m"}, "tasks": ["t"], "apply_chat_template": true, "fewshot_as_multiturn": true}),
        ),
        (
            "system instruction hostile",
            json!({"model": "dummy", "tasks": ["t"], "system_instruction": "--tasks evil; rm -rf / $(whoami) `id` 'q' \"dq\"\nsecond line=1,2"}),
        ),
        (
            "system instruction with equals first",
            json!({"model": "dummy", "tasks": ["t"], "system_instruction": "=leading equals"}),
        ),
        ("seed single", json!({"model": "dummy", "tasks": ["t"], "seed": 42})),
        ("seed negative", json!({"model": "dummy", "tasks": ["t"], "seed": -7})),
        ("seed list with nulls", json!({"model": "dummy", "tasks": ["t"], "seed": [0, null, 8, 52]})),
        ("code execution allowed", json!({"model": "dummy", "tasks": ["t"], "allow_code_execution": true})),
        (
            "trust remote code in model args",
            json!({"model": "hf", "model_args": {"pretrained": "m", "trust_remote_code": true}, "tasks": ["t"]}),
        ),
        (
            "inline tasks add a directory",
            json!({"model": "dummy", "tasks": ["mine"], "inline_tasks": {"mine.yaml": "task: mine"}}),
        ),
        ("include path", json!({"model": "dummy", "tasks": ["t"], "include_path": "/srv/tasks/extra"})),
        (
            "everything",
            json!({"model": "local-chat-completions", "model_args": {"model": "granite", "base_url": "http://127.0.0.1:9/v1/chat/completions", "num_concurrent": 4, "max_retries": 3, "tokenized_requests": false},
            "tasks": ["gsm8k", "ifeval"], "num_fewshot": 3, "limit": 0.1, "batch_size": 1, "gen_kwargs": {"temperature": 0}, "log_samples": true,
            "apply_chat_template": true, "system_instruction": "Be brief.", "seed": [1, 2, 3, 4], "metadata": {"k": "v"}}),
        ),
    ]
}

fn plan(task_dirs: &[&str]) -> RunPlan {
    RunPlan {
        program: "lm_eval".into(),
        output_path: "/tmp/lmeval-parity/out".into(),
        task_dirs: task_dirs.iter().map(|s| (*s).to_string()).collect(),
        inline_tasks_dir: "/tmp/lmeval-parity/inline".into(),
        config_path: String::new(),
    }
}

/// What lm-eval should end up with for `request`, in the shape lm_eval_parse.py prints.
fn expected(request: &EvaluationRequest, include: Value) -> Value {
    let mut metadata = request.model_args.clone();
    metadata.extend(request.metadata.clone());
    let seed = match &request.seed {
        None => json!([0, 1234, 1234, 1234]),
        Some(Value::Array(items)) => Value::Array(items.clone()),
        Some(one) => json!([one, one, one, one]),
    };
    let batch_size = match &request.batch_size {
        None => json!(1),
        Some(Value::String(s)) => json!(s),
        Some(other) => json!(other.to_string()),
    };
    let chat = request.apply_chat_template.clone().unwrap_or(json!(false));
    let multiturn = request.fewshot_as_multiturn.map(Value::Bool).unwrap_or(if chat == json!(false) {
        Value::Null
    } else {
        json!(true)
    });
    json!({
        "model": request.model,
        "model_args": request.model_args,
        "tasks": request.tasks,
        "num_fewshot": request.num_fewshot,
        "limit": request.limit.as_ref().and_then(serde_json::Number::as_f64),
        "batch_size": batch_size,
        "max_batch_size": request.max_batch_size,
        "gen_kwargs": request.gen_kwargs,
        "log_samples": request.log_samples || request.predict_only,
        "apply_chat_template": chat,
        "fewshot_as_multiturn": multiturn,
        "system_instruction": request.system_instruction,
        "seed": seed,
        "predict_only": request.predict_only,
        "metadata": metadata,
        "include_path": include,
        "output_path": "/tmp/lmeval-parity/out",
        "confirm_run_unsafe_code": request.allow_code_execution,
        "trust_remote_code": false,
    })
}

/// Compares numbers by value where lm-eval stores a float (limit), everything else exactly.
fn assert_same(name: &str, got: &Value, want: &Value) {
    let (Some(got), Some(want)) = (got.as_object(), want.as_object()) else { panic!("{name}: not objects: {got}") };
    let mut mismatches = Map::new();
    for (key, want_value) in want {
        let got_value = got.get(key).unwrap_or(&Value::Null);
        let same = if key == "limit" { got_value.as_f64() == want_value.as_f64() } else { got_value == want_value };
        if !same {
            mismatches.insert(key.clone(), json!({"lm_eval": got_value, "requested": want_value}));
        }
    }
    assert!(mismatches.is_empty(), "{name}: {}", Value::Object(mismatches));
}

#[test]
fn lm_eval_reads_back_exactly_what_was_requested() {
    let python = std::env::var("LMEVAL_PYTHON")
        .expect("LMEVAL_PYTHON must point at the pinned lm-eval venv's python (scripts/test sets it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy =
        Policy { allow_online: true, allow_code_execution: true, allow_trust_remote_code: true, allowed_env: vec![] };
    let mut argvs = Vec::new();
    let mut wants = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 30);
    for (i, (name, raw)) in cases.iter().enumerate() {
        let request: EvaluationRequest = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let valid = ValidRequest::parse(request, &policy).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Odd cases also get a server task directory, so several include paths go through --config.
        let task_dirs: &[&str] = if i % 2 == 1 { &["/srv/lmeval/tasks"] } else { &[] };
        let mut plan = plan(task_dirs);
        plan.config_path = dir.path().join(format!("config-{i}.yaml")).to_string_lossy().into_owned();
        let command = build(&valid, &plan);
        if let Some(yaml) = &command.config_yaml {
            std::fs::write(&plan.config_path, yaml).expect("write config");
        }
        let normal = valid.to_request();
        let mut include: Vec<String> = plan.task_dirs.clone();
        if !normal.inline_tasks.is_empty() {
            include.push(plan.inline_tasks_dir.clone());
        }
        include.extend(normal.include_path.clone());
        let include = match include.len() {
            0 => Value::Null,
            1 => json!(include[0]),
            _ => json!(include),
        };
        wants.push((name, expected(&normal, include)));
        argvs.push(command.argv);
    }

    let mut child = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity/lm_eval_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the venv's python");
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(&argvs).expect("json")).expect("write argv");
    let output = child.wait_with_output().expect("python output");
    assert!(output.status.success(), "lm_eval_parse.py failed");
    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("parser output is JSON");
    assert_eq!(parsed.len(), wants.len());
    for ((name, want), got) in wants.iter().zip(&parsed) {
        assert!(got.get("error").is_none(), "{name}: lm-eval rejected our argv: {}", got["error"]);
        assert_same(name, got, want);
    }
    println!("{} requests translated exactly", parsed.len());
}

#[test]
fn parser_check_can_fail() {
    // The comparison above is only worth something if a mangled value is caught.
    let want = json!({"model_args": {"revision": "123"}, "limit": 10.0});
    let got = json!({"model_args": {"revision": 123}, "limit": 10});
    let caught = std::panic::catch_unwind(|| assert_same("mangled", &got, &want));
    assert!(caught.is_err());
}
