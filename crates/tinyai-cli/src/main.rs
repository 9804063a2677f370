//! `tmai`: a thin wrapper over [`tinyai_cli::main_with_args`].

fn main() {
    std::process::exit(tinyai_cli::main_with_args(std::env::args_os()));
}
