//! `tokenusage`: parse the command line, start logging, run the command.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tokenusage::Cli::parse_noting_sources();
    tokenusage_plumbing::telemetry::init(cli.log_format);
    match tokenusage::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
