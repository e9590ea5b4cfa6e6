use clap::Parser;
use twitterstream_operator::config::OperatorArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = OperatorArgs::parse();
    // kube's per-request lines would drown the operator's own.
    args.log_format.install("info,kube=warn");
    twitterstream_operator::run(args).await
}
