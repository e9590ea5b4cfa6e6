use clap::Parser;
use std::process::ExitCode;
use twitterstream_workers::consumer::config::ConsumerArgs;

fn main() -> ExitCode {
    let args = ConsumerArgs::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if args.print_config {
        match serde_json::to_string_pretty(&args) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    twitterstream_workers::common::init_logging(args.log_format);
    tracing::error!("the consumer pipeline is not implemented yet");
    ExitCode::FAILURE
}
