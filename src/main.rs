//! flowgate command line.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Large tables (NAT flows) on transparent huge pages: see `pmd::thp`.
#[global_allocator]
static ALLOC: flowgate::pmd::thp::ThpAlloc = flowgate::pmd::thp::ThpAlloc;

#[derive(Parser)]
#[command(
    name = "flowgate",
    version,
    about = "DPDK poll-mode NAT gateway and network load balancer",
    after_help = "Examples:\n  \
  flowgate check-config conf/test-af-packet.yaml\n  \
  flowgate run -c conf/test-af-packet.yaml\n  \
  flowgate run -c conf/ec2-ena-one-armed.yaml -- --log-level=pmd.net.ena:debug\n\n\
  Signals: SIGHUP reloads the config (a bad file is refused, the running config stays);\n  \
  SIGINT/SIGTERM stop and print per-port statistics."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance.
    Run {
        /// Config file (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// Extra EAL arguments, after `--`.
        #[arg(last = true)]
        eal: Vec<String>,
    },
    /// Ask a running appliance (over its HTTP server): health, stats, ports, nat, targets.
    Ctl(flowgate::ctl::CtlArgs),
    /// Validate a config file; errors are printed as FILE:LINE:COLUMN: field: problem.
    CheckConfig {
        file: PathBuf,
        /// Report every error instead of the first.
        #[arg(long)]
        all: bool,
    },
    /// Shuffle-sharding simulation: overlap of tenant pairs vs the hypergeometric law.
    Shard(flowgate::fleet::cli::ShardArgs),
    /// Fleet controller: elected placement writer (etcd).
    Controller(flowgate::fleet::cli::ControllerArgs),
    /// Fleet node agent: membership lease and the tenants placed on this node (etcd).
    NodeAgent(flowgate::fleet::cli::NodeAgentArgs),
    /// Fleet fabric agent: routes each tenant's prefixes to its shard in a router netns.
    Fabric(flowgate::fleet::cli::FabricArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every subcommand logs through the facade (the fleet agents too); `run` then applies
    // the config's level.
    flowgate::log::set_level(flowgate::config::LogLevel::Info);
    match cli.cmd {
        Cmd::Run { config, eal } => match flowgate::control::run(&config, &eal) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flowgate: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { file, all } => check_config(&file, all),
        Cmd::Shard(a) => flowgate::fleet::cli::shard(&a),
        Cmd::Controller(a) => flowgate::fleet::cli::controller(a),
        Cmd::NodeAgent(a) => flowgate::fleet::cli::node_agent(a),
        Cmd::Fabric(a) => flowgate::fleet::cli::fabric(a),
        Cmd::Ctl(args) => ExitCode::from(flowgate::ctl::run(&args) as u8),
    }
}

fn check_config(file: &std::path::Path, all: bool) -> ExitCode {
    match flowgate::config::load(file) {
        Ok(cfg) => {
            for w in flowgate::config::nat_warnings(&cfg) {
                eprintln!("{}: {w}", file.display());
            }
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(first) => {
            if all {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let name = file.display().to_string();
                match flowgate::config::parse_unvalidated(&text, &name) {
                    Ok(cfg) => {
                        for e in cfg.validate_all(&text, &name) {
                            eprintln!("{e}");
                        }
                    }
                    Err(e) => eprintln!("{e}"),
                }
            } else {
                eprintln!("{first}");
            }
            ExitCode::FAILURE
        }
    }
}
