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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(twitterstream_workers::consumer::pipeline::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "consumer failed");
            ExitCode::FAILURE
        }
    }
}
