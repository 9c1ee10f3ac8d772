//! The `hmctl` binary; everything lives in the `hypermesh_ctl` library.

fn main() -> std::process::ExitCode {
    hypermesh_ctl::main()
}
