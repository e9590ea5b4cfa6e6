use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use twitterstream_contract::producer::ProducerArgs;
use twitterstream_workers::producer::clock::{Clock, ManualClock, SystemClock};
use twitterstream_workers::producer::run::{RunError, run};
use twitterstream_workers::producer::synthetic::{Scratch, SyntheticGenerator};
use twitterstream_workers::shutdown::shutdown_on_signals;

/// Writes synthetic tweets as `key<TAB>value` lines (what `kcat -K '\t'`
/// reads), for benchmarks that compare the producer with kcat on the same
/// records. Invoked as `twitterstream-producer dump-synthetic ...`.
#[derive(Debug, Parser)]
#[command(name = "twitterstream-producer dump-synthetic")]
struct DumpArgs {
    /// Seed of the generator (as --seed of the producer).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of tweets.
    #[arg(long)]
    count: u64,
    /// Pin created_at: the first tweet's time, one millisecond apart after.
    #[arg(long)]
    start: Option<chrono::DateTime<chrono::Utc>>,
}

fn dump(args: &DumpArgs) -> std::io::Result<()> {
    let manual = args.start.map(ManualClock::new);
    let clock: Arc<dyn Clock> = match &manual {
        Some(m) => m.clone(),
        None => Arc::new(SystemClock),
    };
    let mut generator = SyntheticGenerator::new(args.seed, clock);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut scratch = Scratch::default();
    let mut json = String::with_capacity(1024);
    for _ in 0..args.count {
        json.clear();
        let (_, id) = generator.next_into(&mut scratch, &mut json);
        writeln!(out, "{id}\t{json}")?;
        if let Some(m) = &manual {
            m.advance(std::time::Duration::from_millis(1));
        }
    }
    out.flush()
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("dump-synthetic") {
        let args = DumpArgs::parse_from(std::env::args().skip(1));
        return match dump(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = ProducerArgs::parse();
    if let Some(code) =
        twitterstream_workers::common::preflight(&args, args.validate(), args.print_config)
    {
        return code;
    }
    twitterstream_workers::common::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        run(args, shutdown).await
    });
    match result {
        Ok(()) => {
            tracing::info!("producer stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Missing or incomplete credentials are a configuration error
            // (exit 2, like an invalid flag); the rest are runtime failures.
            let code = if matches!(e, RunError::Credentials(_)) {
                2
            } else {
                1
            };
            twitterstream_workers::common::fatal("producer", &e, code)
        }
    }
}

// librdkafka frees each message on its polling thread after the main thread
// allocated it; glibc's allocator spends a large share of the producer's CPU
// on those cross-thread frees, mimalloc very little.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
