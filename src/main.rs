use clap::Parser;
use lm_eval_aas::cli::{Cli, Command};
use lm_eval_aas::{api, driver, k8s, sandbox, server, telemetry};

fn main() -> anyhow::Result<()> {
    // rustls is built with two crypto back-ends (ring, which kube and our servers use, and aws-lc-rs, which
    // object_store's HTTP client brings), so it cannot pick one by itself: the process uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
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
            let json = api::openapi().to_pretty_json()? + "\n";
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
    }
}
