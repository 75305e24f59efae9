//! `weir-load`: the benchmark load generator; prints one JSON report on stdout.

use clap::Parser;
use weir_bench::load::{Args, run};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = weir_bench::runtime(args.threads)?;
    let report = rt.block_on(run(args))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
