//! The `datamon-agent` binary: everything lives in the library; see [`datamon_agent::cli`].

fn main() -> std::process::ExitCode {
    datamon_agent::cli::main()
}
