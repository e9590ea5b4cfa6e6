use clap::Parser;
use std::process::ExitCode;
use twitterstream_contract::consumer::ConsumerArgs;

fn main() -> ExitCode {
    let args = ConsumerArgs::parse();
    if let Some(code) =
        twitterstream_workers::common::preflight(&args, args.validate(), args.print_config)
    {
        return code;
    }
    args.log_format.install("info");
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
    let ended = runtime.block_on(twitterstream_workers::consumer::pipeline::run(args));
    // A topic lookup still waiting for the brokers (10 s at the most) is
    // not waited for: the answer is not needed any more.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => twitterstream_workers::common::fatal("consumer", &e, 1),
    }
}

// Tweets are parsed on the pool's threads and their parts freed on the stage
// thread; glibc's malloc is slow on such cross-thread frees, mimalloc is not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
