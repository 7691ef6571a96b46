use clap::Parser;
use lm_eval_aas::cli::{Cli, Command};
use lm_eval_aas::client::commands;
use lm_eval_aas::{api, driver, k8s, sandbox, server, telemetry};
use reqwest::Method;

fn main() -> anyhow::Result<()> {
    // rustls is built with two crypto back-ends (ring, which kube and our servers use, and aws-lc-rs, which
    // object_store's HTTP client brings), so it cannot pick one by itself: the process uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A usage error exits 3, as the client's exit codes say (clap's own 2 means "the evaluation failed" there).
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        let code = if err.use_stderr() { lm_eval_aas::client::Exit::Refused as i32 } else { 0 };
        let _ = err.print();
        std::process::exit(code)
    });
    match cli.command {
        // Confines itself and becomes lm_eval: no runtime, no other thread (Landlock restricts the calling thread).
        Command::Sandbox(args) => std::process::exit(sandbox::run(*args)?),
        command => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(command)),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            server::serve(*args).await
        }
        Command::Openapi { output } => {
            let json = serde_json::to_string_pretty(&api::openapi())? + "\n";
            match output {
                Some(path) => std::fs::write(path, json)?,
                None => print!("{json}"),
            }
            Ok(())
        }
        Command::Crd { output } => {
            let yaml = yaml_serde::to_string(&k8s::crd::crd())?;
            match output {
                Some(path) => std::fs::write(path, yaml)?,
                None => print!("{yaml}"),
            }
            Ok(())
        }
        Command::Driver(args) => std::process::exit(driver::run(*args).await?),
        Command::Sandbox(args) => std::process::exit(sandbox::run(*args)?),
        Command::Submit { client, args } => std::process::exit(commands::submit(&client, *args).await),
        Command::Wait { id, client, args } => std::process::exit(commands::wait(&client, &id, *args).await),
        Command::Get { id, client } => {
            std::process::exit(commands::simple(&client, Method::GET, format!("/{id}")).await)
        }
        Command::List { query, client } => {
            let rest = if query.is_empty() { String::new() } else { format!("?{query}") };
            std::process::exit(commands::simple(&client, Method::GET, rest).await)
        }
        Command::Logs { id, follow, client } => std::process::exit(commands::logs(&client, &id, follow).await),
        Command::Results { id, client } => {
            std::process::exit(commands::simple(&client, Method::GET, format!("/{id}/results")).await)
        }
        Command::Cancel { id, client } => {
            std::process::exit(commands::simple(&client, Method::POST, format!("/{id}/cancel")).await)
        }
        Command::Delete { id, client } => {
            std::process::exit(commands::simple(&client, Method::DELETE, format!("/{id}")).await)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "lm-eval-aas",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
