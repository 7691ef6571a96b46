use clap::Parser;
use lm_eval_aas::cli::{Cli, Command};
use lm_eval_aas::{api, driver, k8s, server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
    }
}
