use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use twitterstream_contract::producer::ProducerArgs;
use twitterstream_workers::producer::clock::{Clock, ManualClock, SystemClock};
use twitterstream_workers::producer::run::{RunError, run};
use twitterstream_workers::producer::synthetic::{Scratch, SyntheticGenerator};
use twitterstream_workers::shutdown::shutdown_on_signals;

// The command line: the producer's flags, or a tool. No doc comment here:
// the about text comes with the flattened ProducerArgs.
#[derive(Debug, Parser)]
#[command(
    name = "twitterstream-producer",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    producer: ProducerArgs,
    #[command(subcommand)]
    tool: Option<Tool>,
}

/// What the command line asks for.
enum Invocation {
    Produce(Box<ProducerArgs>),
    Tool(Tool),
}

#[derive(Debug, Subcommand)]
enum Tool {
    DumpSynthetic(DumpArgs),
}

impl Cli {
    /// The producer's arguments, or a tool's: the producer's stay unbuilt
    /// when a tool runs, since building them would fail for the required
    /// flags a tool does not take.
    fn parse_args() -> Invocation {
        let mut command = Self::command();
        let matches = command.get_matches_mut();
        let parsed = if matches.subcommand().is_some() {
            Tool::from_arg_matches(&matches).map(Invocation::Tool)
        } else {
            ProducerArgs::from_arg_matches(&matches).map(|a| Invocation::Produce(Box::new(a)))
        };
        parsed.unwrap_or_else(|e| e.format(&mut command).exit())
    }
}

/// Writes synthetic tweets as `key<TAB>value` lines (what `kcat -K '\t'`
/// reads), for benchmarks that compare the producer with kcat on the same
/// records.
#[derive(Debug, Args)]
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
    let args = match Cli::parse_args() {
        Invocation::Tool(Tool::DumpSynthetic(args)) => {
            return match dump(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Invocation::Produce(args) => *args,
    };
    if let Some(code) =
        twitterstream_workers::common::preflight(&args, args.validate(), args.print_config)
    {
        return code;
    }
    args.log_format.install("info");
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
    // A librdkafka call of clients given up on (credentials rotated while
    // the brokers refused them) may still block a thread until its own
    // timeout; exiting does not wait for it (it held the process for over
    // 100 s after "producer stopped").
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
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
