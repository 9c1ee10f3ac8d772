//! Compiles the eBPF programs in `bpf/` (C) with clang `-target bpf`; `src/accounting`
//! embeds the object. Needs Debian's `clang` and `libbpf-dev` (`bpf/bpf_helpers.h`),
//! both in `scripts/packages.txt`. `CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &str = "bpf/accounting.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={PROGRAMS}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("accounting.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // `-target bpf` drops the multiarch include directory where Debian keeps <asm/types.h>
    // (which <linux/bpf.h> includes): name it for the architecture being built.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I"])
        .arg(&multiarch)
        .args(["-c", PROGRAMS, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed ({s}) compiling {PROGRAMS}: the eBPF programs need Debian's \
             clang and libbpf-dev (scripts/packages.txt; scripts/setup.sh installs them)"
        ),
        Err(e) => panic!(
            "running {clang} to compile {PROGRAMS}: {e}: install Debian's clang and \
             libbpf-dev (scripts/packages.txt; scripts/setup.sh installs them)"
        ),
    }
}
