use clap::Parser;
use twitterstream_operator::config::OperatorArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = OperatorArgs::parse();
    twitterstream_operator::init_logging(args.log_format);
    twitterstream_operator::run(args).await
}
