//! Which environment variables a request may set for lm_eval. The service sets some itself; others change
//! how Python, the dynamic loader, a shell, a browser hook, TLS or a proxy behaves, which is running code or
//! redirecting traffic by another name, so a request gets them only where the operator allows them by name.

/// Set by the service for every evaluation: never from a request.
pub fn is_set_by_service(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "HF_HOME",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_TRUST_REMOTE_CODE",
        "HF_ALLOW_CODE_EVAL",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str()) || upper.starts_with("LMEVAL_") || upper.starts_with("KUBERNETES_")
}

/// Changes how code is loaded or run, or where traffic goes.
pub fn changes_behaviour(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "PYTHON",
        "LD_",
        "DYLD_",
        "GIT_",
        "PIP_",
        "UV_",
        "CONDA",
        "VIRTUAL_ENV",
        "NODE_",
        "NPM_",
        "PERL",
        "RUBY",
        "JAVA_",
        "JDK_",
        "BASH_",
        "XDG_",
        "HF_HUB_",
        "TORCH",
        "TRITON",
        "CUDA_",
        "NCCL_",
        "OMP_",
        "MKL_",
    ];
    const EXACT: &[&str] = &[
        "BROWSER",
        "ENV",
        "SHELL",
        "SHELLOPTS",
        "IFS",
        "PS4",
        "PROMPT_COMMAND",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "TMPDIR",
        "TEMP",
        "TMP",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SSLKEYLOGFILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HF_ENDPOINT",
        "HF_DATASETS_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_MODULES_CACHE",
        "NLTK_DATA",
        "MPLCONFIGDIR",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str()) || PREFIXES.iter().any(|p| upper.starts_with(p)) || upper.ends_with("_PROXY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_loading_and_traffic_are_told_apart_from_plain_settings() {
        for name in [
            "PYTHONWARNINGS",
            "PYTHONSTARTUP",
            "LD_PRELOAD",
            "BROWSER",
            "HTTPS_PROXY",
            "http_proxy",
            "BASH_ENV",
            "GIT_SSH_COMMAND",
        ] {
            assert!(changes_behaviour(name), "{name}");
        }
        for name in ["MODE", "OPENAI_BASE_URL", "NUMEXPR_MAX_THREADS", "TOKENIZERS_PARALLELISM"] {
            assert!(!changes_behaviour(name) && !is_set_by_service(name), "{name}");
        }
        assert!(
            is_set_by_service("LMEVAL_RUN_RECORD") && is_set_by_service("home") && is_set_by_service("HF_HUB_OFFLINE")
        );
    }
}
